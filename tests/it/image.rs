//! `aira image build` and `aira image push` against Debian's `docker-registry` on loopback: the
//! pushed image is pulled back, unpacked into an empty folder and run there with `chroot` (no
//! host library), and answers `/healthz`; a second push sends no blob; builds are reproducible.
//!
//! The static release runtime takes minutes to build, so the tests share one `aira image build`
//! (from the source tree, the real path) per run of this binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect::<String>())
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    #[track_caller]
    fn ok_json(&self) -> Value {
        assert_eq!(self.code, 0, "exit code\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `aira` (blocking: the shared build is initialised outside any runtime's control).
fn aira(args: &[&str], env: &[(&str, &str)]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_aira"))
        .args(args)
        .env_remove("AIRA_RUNTIME_STATIC_BIN")
        .env_remove("AIRA_REGISTRY_USER")
        .env_remove("AIRA_REGISTRY_PASSWORD")
        .env_remove("SOURCE_DATE_EPOCH")
        .env("AIRA_DNS_RESOLVER", crate::harness::NO_DNS)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The one image built from the source tree in this run: `aira image build --output json`.
fn built() -> &'static Value {
    static BUILT: OnceLock<Value> = OnceLock::new();
    BUILT.get_or_init(|| {
        // A folder per process: the deployed run's test process builds beside this one. Those of
        // processes that have ended go, so that runs do not pile them up.
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("aira-image-shared-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let out = tmp.join(format!("aira-image-shared-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let started = Instant::now();
        let run = aira(&["image", "build", "--out", out.to_str().unwrap(), "--output", "json"], &[]);
        eprintln!("aira image build (source tree) took {:.1}s", started.elapsed().as_secs_f64());
        run.ok_json()
    })
}

/// The static runtime that the shared build put in its image.
pub(crate) fn static_runtime() -> PathBuf {
    PathBuf::from(built()["binary"].as_str().expect("the image build reports its binary"))
}

/// A `docker-registry` process on a free loopback port, storage in a temp dir; killed on drop.
pub(crate) struct Registry {
    child: Child,
    pub(crate) addr: String,
    dir: tempfile::TempDir,
}

impl Registry {
    /// `auth`: require basic auth (the registry provisions user `docker` with a random password).
    pub(crate) fn start(auth: bool) -> Registry {
        Registry::start_with(|root| match auth {
            true => {
                format!("auth:\n  htpasswd:\n    realm: aira-test\n    path: {}\n", root.join("htpasswd").display())
            }
            false => String::new(),
        })
    }

    /// With the `auth:` section `auth(folder)` writes (the folder is the registry's own).
    fn start_with(auth: impl FnOnce(&Path) -> String) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let root = dir.path();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n  secret: aira-test\n",
            root.join("storage").display()
        );
        cfg.push_str(&auth(root));
        std::fs::write(root.join("cfg.yml"), cfg).unwrap();
        let log = std::fs::File::create(root.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(root.join("cfg.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry is not installed: run the tests through scripts/test");
        let reg = Registry { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&reg.addr).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start:\n{}", reg.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Requests the registry served that wrote a blob (upload starts and upload puts).
    pub(crate) fn blob_writes(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("response completed"))
            .filter(|l| {
                (l.contains("http.request.method=POST") || l.contains("http.request.method=PUT"))
                    && l.contains("/blobs/uploads/")
            })
            .count()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn push(registry: &Registry, target: &str, from: &str, env: &[(&str, &str)]) -> Out {
    let to = format!("{}/{target}", registry.addr);
    aira(&["image", "push", "--to", &to, "--insecure", "--from", from, "--output", "json"], env)
}

/// `GET` with the OCI manifest type accepted: status, `Docker-Content-Digest`, body.
async fn get(http: &reqwest::Client, url: &str) -> (u16, Option<String>, Vec<u8>) {
    let resp = http.get(url).header("accept", MANIFEST_TYPE).send().await.unwrap();
    let status = resp.status().as_u16();
    let digest = resp.headers().get("docker-content-digest").map(|d| d.to_str().unwrap().to_string());
    (status, digest, resp.bytes().await.unwrap().to_vec())
}

async fn healthz(addr: &str) -> bool {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
    matches!(http.get(format!("http://{addr}/healthz")).send().await, Ok(r) if r.status() == 200)
}

#[tokio::test]
async fn image_pushed_to_a_registry_is_pulled_back_and_runs_in_an_empty_root() {
    let built = built();
    let digest = built["digest"].as_str().unwrap();
    let layout = built["out"].as_str().unwrap();
    let registry = Registry::start(false);

    let started = Instant::now();
    let first = push(&registry, "aira/runtime:v1", layout, &[]).ok_json();
    eprintln!("first push took {:.1}s", started.elapsed().as_secs_f64());
    assert_eq!(first["reference"], format!("{}/aira/runtime@{digest}", registry.addr));
    assert_eq!((first["uploaded"].as_u64(), first["skipped"].as_u64()), (Some(2), Some(0)));
    assert_eq!(registry.blob_writes(), 4, "a POST and a PUT per blob:\n{}", registry.log());

    // Pull the manifest and the blobs back; everything is what its digest says.
    let http = reqwest::Client::new();
    let (status, header, manifest) = get(&http, &registry.url("/v2/aira/runtime/manifests/v1")).await;
    assert_eq!(status, 200);
    assert_eq!(sha256(&manifest), digest);
    assert_eq!(header.as_deref(), Some(digest));
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(manifest["mediaType"], MANIFEST_TYPE);
    let blob = |d: &Value| registry.url(&format!("/v2/aira/runtime/blobs/{}", d["digest"].as_str().unwrap()));
    let (status, _, config) = get(&http, &blob(&manifest["config"])).await;
    assert_eq!(status, 200);
    assert_eq!(sha256(&config), manifest["config"]["digest"].as_str().unwrap());
    let config: Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(config["config"]["User"], "65532:65532");
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    let (status, _, layer) = get(&http, &blob(&layers[0])).await;
    assert_eq!(status, 200);
    assert_eq!(sha256(&layer), layers[0]["digest"].as_str().unwrap());
    assert_eq!(layer.len() as u64, layers[0]["size"].as_u64().unwrap());
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&layer[..]), &mut tar).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][0].as_str().unwrap(), sha256(&tar));

    // Unpack into an empty folder and run the runtime there, as the image's user, with chroot:
    // nothing of the host's file system (no library, no loader) is visible to it.
    let root = tempfile::tempdir().unwrap();
    let mut archive = tar::Archive::new(&tar[..]);
    archive.set_preserve_permissions(true);
    archive.unpack(root.path()).unwrap();
    let mut top: Vec<String> =
        std::fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    top.sort();
    assert_eq!(top, ["etc", "tmp", "usr"]);
    let listen = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(root.path().join("tmp/runtime.log")).unwrap();
    // chroot needs root: through password-less sudo otherwise (GitHub's runners), which passes
    // the SIGTERM below on to the runtime.
    // (/proc/self belongs to the process's effective user.)
    let root_user = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    let mut chroot = match root_user {
        true => tokio::process::Command::new("/usr/sbin/chroot"),
        false => {
            let mut sudo = tokio::process::Command::new("/usr/bin/sudo");
            sudo.args(["-n", "/usr/sbin/chroot"]);
            sudo
        }
    };
    let mut child = chroot
        .arg("--userspec=65532:65532")
        .arg(root.path())
        .args(["/usr/local/bin/aira-runtime", "serve", "--listen", &listen, "--data", "/tmp/data"])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthz(&listen).await {
        let log = std::fs::read_to_string(root.path().join("tmp/runtime.log")).unwrap_or_default();
        assert!(child.try_wait().unwrap().is_none(), "the runtime exited in the chroot:\n{log}");
        assert!(Instant::now() < deadline, "no 200 from /healthz in the chroot:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It wrote its data as the non-root user, inside the image's /tmp.
    assert!(root.path().join("tmp/data").is_dir());
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    assert!(ended.is_ok_and(|s| s.is_ok()), "the runtime did not stop on SIGTERM");

    // The same image again: every blob is already there, none is sent.
    let second = push(&registry, "aira/runtime:v1", layout, &[]).ok_json();
    assert_eq!(second["reference"], first["reference"]);
    assert_eq!((second["uploaded"].as_u64(), second["skipped"].as_u64()), (Some(0), Some(2)));
    assert_eq!(registry.blob_writes(), 4, "the second push wrote blobs:\n{}", registry.log());
    // Without a tag the manifest is pushed by digest.
    let by_digest = push(&registry, "aira/runtime", layout, &[]).ok_json();
    assert_eq!(by_digest["uploaded"], 0);
    let (status, _, _) = get(&http, &registry.url(&format!("/v2/aira/runtime/manifests/{digest}"))).await;
    assert_eq!(status, 200);
}

/// Every file of a folder, relative path → bytes.
/// The ELF section names of `elf` (64-bit little-endian), read from its section header table.
fn section_names(elf: &[u8]) -> Vec<String> {
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    let (shoff, shentsize, shnum, shstrndx) = (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let names = u64_at(shoff + shstrndx * shentsize + 0x18);
    (0..shnum)
        .map(|i| {
            let start = names + u32_at(shoff + i * shentsize);
            let end = start + elf[start..].iter().position(|b| *b == 0).unwrap();
            String::from_utf8_lossy(&elf[start..end]).into_owned()
        })
        .collect()
}

/// The runtime the image ships is built to be small (`[profile.image]`): no symbol table, no
/// debug info, and one crypto library (ring, under rustls and the AWS SDK's client) rather
/// than ring and aws-lc.
#[test]
fn the_image_runtime_has_no_symbols_and_one_crypto_library() {
    let elf = std::fs::read(static_runtime()).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    let sections = section_names(&elf);
    assert!(sections.iter().any(|s| s == ".text"), "{sections:?}");
    for absent in [".symtab", ".strtab", ".debug_info", ".debug_line"] {
        assert!(!sections.iter().any(|s| s == absent), "{absent} in {sections:?}");
    }
    let has = |needle: &[u8]| elf.windows(needle.len()).any(|w| w == needle);
    // aws-lc's messages name it ("infallible AWS-LC function"; a build linking it has dozens).
    assert!(!has(b"AWS-LC"), "aws-lc is linked into the image's runtime");
    let layer = built()["layers"][0]["size"].as_u64().unwrap();
    eprintln!("the image's runtime: {} bytes, layer {layer} bytes compressed", elf.len());
}

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn image_build_twice_gives_the_same_digest_and_bytes() {
    let built = built();
    let binary = built["binary"].as_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    let one = aira(&["image", "build", "--binary", binary, "--out", a.to_str().unwrap(), "--output", "json"], &[]);
    // The binary may also come from the environment.
    let two = aira(
        &["image", "build", "--out", b.to_str().unwrap(), "--output", "json"],
        &[("AIRA_RUNTIME_STATIC_BIN", binary)],
    );
    let (one, two) = (one.ok_json(), two.ok_json());
    assert_eq!(one["digest"], built["digest"]);
    assert_eq!(two["digest"], built["digest"]);
    let (fa, fb) = (files(&a), files(&b));
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    assert!(fa == fb, "the two layouts differ");
    assert_eq!(fa.len(), 6, "oci-layout, index.json, aira-source and three blobs: {:?}", fa.keys());
    // The shared build took the program from the source tree: the same image, but the
    // fingerprint beside it is of the sources, not of the binary.
    let (mut fa, mut shared) = (fa, files(Path::new(built["out"].as_str().unwrap())));
    assert_ne!(fa.remove("aira-source"), shared.remove("aira-source"));
    assert_eq!(fa, shared);

    // SOURCE_DATE_EPOCH moves every timestamp, so the digest changes.
    let c = work.path().join("c");
    let later = aira(
        &["image", "build", "--binary", binary, "--out", c.to_str().unwrap(), "--output", "json"],
        &[("SOURCE_DATE_EPOCH", "86400")],
    );
    assert_ne!(later.ok_json()["digest"], built["digest"]);

    // A dynamically linked executable cannot run in the image: refused, as the user's error.
    let refused = aira(&["image", "build", "--binary", env!("CARGO_BIN_EXE_aira"), "--out", c.to_str().unwrap()], &[]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("dynamically linked"), "{}", refused.stderr);
}

#[tokio::test]
async fn image_push_failures_name_what_failed_and_the_registry_error() {
    let built = built();
    let layout = built["out"].as_str().unwrap();
    let registry = Registry::start(true);

    // Bad references and flags are the user's errors (1), with no registry call.
    for to in ["runtime", "127.0.0.1:1/Upper", "registry.example.com/aira"] {
        let run = aira(&["image", "push", "--to", to, "--insecure", "--from", layout], &[]);
        assert_eq!(run.code, 1, "{to}: {}", run.stderr);
    }
    let no_layout = aira(&["image", "push", "--to", "127.0.0.1:1/a", "--insecure", "--from", "/nonexistent"], &[]);
    assert_eq!(no_layout.code, 1, "{}", no_layout.stderr);
    assert!(no_layout.stderr.contains("aira image build"), "{}", no_layout.stderr);

    // The registry refuses: exit 2, naming the blob, the status and the registry's error.
    let denied = push(&registry, "aira/runtime:v1", layout, &[]);
    assert_eq!(denied.code, 2, "{}", denied.stderr);
    let layer = built["layers"][0]["digest"].as_str().unwrap();
    for part in [layer, "HTTP 401 Unauthorized", "UNAUTHORIZED: authentication required"] {
        assert!(denied.stderr.contains(part), "`{part}` missing from:\n{}", denied.stderr);
    }

    // With the credentials (basic auth, as ECR hands them out) it goes through.
    let log = registry.log();
    let password = log
        .split_whitespace()
        .find_map(|w| w.strip_prefix("password="))
        .unwrap_or_else(|| panic!("no provisioned password in the registry log:\n{log}"));
    let env = [("AIRA_REGISTRY_USER", "docker"), ("AIRA_REGISTRY_PASSWORD", password)];
    let pushed = push(&registry, "aira/runtime:v1", layout, &env).ok_json();
    assert_eq!(pushed["digest"], built["digest"]);
    assert_eq!(pushed["uploaded"], 2);
}

/// A JWT for user `docker` to push and pull `aira/runtime`, as a token server issues it
/// (RS256, its certificate in `x5c`), signed with openssl; the certificate goes to `cert.pem`.
fn signed_token(dir: &Path) -> String {
    let script = r#"set -euo pipefail
cd "$1"
openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 1 -subj /CN=aira-test-token 2>/dev/null
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
x5c=$(openssl x509 -in cert.pem -outform DER | openssl base64 -A)
now=$(date +%s)
header=$(printf '{"typ":"JWT","alg":"RS256","x5c":["%s"]}' "$x5c" | b64url)
claims=$(printf '{"iss":"aira-test-issuer","sub":"docker","aud":"aira-test","exp":%d,"nbf":%d,"iat":%d,"jti":"aira-test","access":[{"type":"repository","name":"aira/runtime","actions":["pull","push"]}]}' $((now + 3600)) $((now - 60)) "$now" | b64url)
sig=$(printf '%s.%s' "$header" "$claims" | openssl dgst -sha256 -sign key.pem | b64url)
printf '%s.%s.%s' "$header" "$claims" "$sig""#;
    let out = Command::new("bash").args(["-c", script, "bash"]).arg(dir).output().unwrap();
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A registry with token authentication, as GitHub's and Docker Hub's: `docker-registry`
/// checks every call's Bearer token against the certificate it trusts; the token server here
/// hands the signed token to `docker`/`secret` and records what it was asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_push_to_a_token_registry_asks_its_realm_for_a_scoped_token() {
    use http_body_util::Full;
    use hyper::{Response, StatusCode};

    let built = built();
    let layout = built["out"].as_str().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let token = signed_token(keys.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let realm = format!("http://{}/token", listener.local_addr().unwrap());
    let asked: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let (seen, body) = (asked.clone(), format!("{{\"token\": \"{token}\"}}"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (seen, body) = (seen.clone(), body.clone());
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let auth = req.headers().get("authorization").and_then(|h| h.to_str().ok()).unwrap_or("");
                // base64("docker:secret")
                let ok = auth == "Basic ZG9ja2VyOnNlY3JldA==";
                seen.lock().unwrap().push(format!("{} {ok}", req.uri()));
                let (status, body) =
                    if ok { (StatusCode::OK, body.clone()) } else { (StatusCode::UNAUTHORIZED, "{}".into()) };
                let resp = Response::builder().status(status).body(Full::new(bytes::Bytes::from(body))).unwrap();
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, service));
        }
    });
    let cert = keys.path().join("cert.pem");
    let registry = Registry::start_with(|_| {
        format!(
            "auth:\n  token:\n    realm: {realm}\n    service: aira-test\n    issuer: aira-test-issuer\n    rootcertbundle: {}\n",
            cert.display()
        )
    });

    let env = [("AIRA_REGISTRY_USER", "docker"), ("AIRA_REGISTRY_PASSWORD", "secret")];
    let pushed = push(&registry, "aira/runtime:v1", layout, &env).ok_json();
    assert_eq!((pushed["digest"].clone(), pushed["uploaded"].as_u64()), (built["digest"].clone(), Some(2)));
    let asked = asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        ["/token?scope=repository%3Aaira%2Fruntime%3Apull%2Cpush&service=aira-test true"],
        "one token, for this repository, with the credentials"
    );
    // The registry holds the manifest: read back with the same token.
    let http = reqwest::Client::new();
    let manifest = http
        .get(registry.url("/v2/aira/runtime/manifests/v1"))
        .bearer_auth(&token)
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), 200, "{}", registry.log());

    // Wrong credentials: the realm refuses, and the error says where the token was asked for.
    let env = [("AIRA_REGISTRY_USER", "docker"), ("AIRA_REGISTRY_PASSWORD", "wrong")];
    let denied = push(&registry, "aira/runtime:v2", layout, &env);
    assert_eq!(denied.code, 2, "{}", denied.stderr);
    assert!(
        denied.stderr.contains(&format!("getting a push token for aira/runtime from {realm}: HTTP 401")),
        "{}",
        denied.stderr
    );
}

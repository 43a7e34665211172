//! `aira image build`: the runtime as a static binary, and the one-layer image around it.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context, Result};

use super::oci::{self, ConfigSpec, Image, Tree};
use super::Error;

/// The Rust target of the image (the only one installed here; see DESIGN "The runtime image").
pub const TARGET: &str = "x86_64-unknown-linux-gnu";
/// `crt-static` gives a static-pie binary; the getrandom backend flag lets it draw random bytes
/// without `/dev/urandom` (runtime/README.md, "Static binary").
pub const RUSTFLAGS: &str = r#"-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom""#;
/// Where the certificates come from on the build machine, and where they go in the image.
pub const CA_CERTS: &str = "/etc/ssl/certs/ca-certificates.crt";
pub use aira_engine::expand::defaults::{RUNTIME_BINARY as BINARY_IN_IMAGE, RUNTIME_UID as UID};
/// The label value when the source revision is unknown (not built from a git checkout).
const UNKNOWN_REVISION: &str = "unknown";
/// The cargo profile the runtime is built with: the workspace's `[profile.image]`, or the one
/// `AIRA_IMAGE_PROFILE` names (the test command's `image-test`: the same static runtime without
/// LTO, minutes sooner on a fresh machine). The fingerprint holds it, so images built with
/// another profile are other images.
fn profile() -> String {
    std::env::var("AIRA_IMAGE_PROFILE").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "image".into())
}
/// What of the source tree the runtime's binary is built from (the runtime, the workspace
/// crates it depends on, and the workspace's manifest, lock file and profiles): the fingerprint
/// hashes these, and the image's revision label is the last commit that changed one of them. A
/// test checks the list against `cargo metadata`.
pub const INPUTS: &[&str] =
    &["Cargo.toml", "Cargo.lock", "runtime/Cargo.toml", "runtime/src", "runtime/web", "crates/unify"];
/// The file beside an image layout that holds the fingerprint it was built from.
pub const SOURCE_FILE: &str = "aira-source";

pub struct Options {
    pub out: PathBuf,
    /// A prebuilt static runtime; otherwise it is built from this source tree.
    pub binary: Option<PathBuf>,
    /// Unix seconds for every timestamp (`SOURCE_DATE_EPOCH`, else 0).
    pub epoch: u64,
}

pub struct Built {
    pub image: Image,
    pub out: PathBuf,
    pub binary: PathBuf,
    pub revision: String,
    /// [`fingerprint`] of what it was built from.
    pub source: String,
}

/// Where the runtime's program comes from.
enum Program {
    /// Built with cargo in this source tree.
    Source(PathBuf),
    /// A static binary: given, or installed beside `aira`.
    Binary(PathBuf),
}

/// The source tree this `aira` was built from, if it is still there.
fn source_tree() -> Option<&'static Path> {
    // This crate is `crates/image` of the source tree.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2)?;
    dir.join("runtime/Cargo.toml").exists().then_some(dir)
}

/// `aira-runtime` in the folder of the running `aira`, as a release installs it.
fn beside_this_program() -> Option<PathBuf> {
    let runtime = std::env::current_exe().ok()?.with_file_name("aira-runtime");
    runtime.is_file().then_some(runtime)
}

fn program(opts: &Options) -> Result<Program, Error> {
    match (&opts.binary, source_tree(), beside_this_program()) {
        (Some(p), _, _) => Ok(Program::Binary(p.clone())),
        (None, Some(source), _) => Ok(Program::Source(source.to_path_buf())),
        // An installed release: its static runtime sits beside `aira`.
        (None, None, Some(runtime)) => Ok(Program::Binary(runtime)),
        (None, None, None) => Err(Error::Usage(
            "this aira was not run from its source tree and has no aira-runtime beside it, so it cannot build the runtime: pass --binary PATH (or set AIRA_RUNTIME_STATIC_BIN) to a static aira-runtime, or install a release (both programs)".into(),
        )),
    }
}

/// A digest of everything that decides the image's bytes, known without building it: the
/// [`INPUTS`] of the source tree (as they are on disk, committed or not), the compiler's version,
/// the target, flags and profile — or the prebuilt binary —, the CA certificates, the epoch and
/// the labels. Equal fingerprints, equal programs: `plan` tells from it whether `up` would
/// build a new image, and `up` reuses the image a stack already runs when it was built from the
/// same fingerprint (recorded on its task definitions).
pub fn fingerprint(opts: &Options) -> Result<String, Error> {
    fingerprint_of(&program(opts)?, opts, &labels())
}

/// [`fingerprint`] of `program` with the image's `labels` (source, revision).
fn fingerprint_of(program: &Program, opts: &Options, labels: &(String, String)) -> Result<String, Error> {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    let mut field = |name: &str, bytes: &[u8]| {
        h.update(name.as_bytes());
        h.update([0]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    match program {
        Program::Source(dir) => {
            for file in input_files(dir) {
                let bytes = std::fs::read(dir.join(&file)).with_context(|| format!("read {file}"))?;
                field(&file, &bytes);
            }
            field("rustc", rustc_version().as_bytes());
            field("build", format!("{} {TARGET} {RUSTFLAGS}", profile()).as_bytes());
        }
        Program::Binary(path) => field("binary", &read_binary(path)?),
    }
    field("certs", &read_certs()?);
    let (source, revision) = labels;
    field("labels", format!("{} {source} {revision}", opts.epoch).as_bytes());
    Ok(oci::digest(&h.finalize()[..]))
}

/// The fingerprint recorded beside the image layout in `out` (by [`build`]), if any.
pub fn built_from(out: &Path) -> Option<String> {
    std::fs::read_to_string(out.join(SOURCE_FILE)).ok().map(|s| s.trim().to_string())
}

/// The [`INPUTS`] files under `dir`, sorted: what git tracks or would track (ignored files
/// left out), else every file but build output and dependencies.
fn input_files(dir: &Path) -> Vec<String> {
    let listed = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard", "--"])
        .args(INPUTS)
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success());
    let mut files: Vec<String> = match listed {
        Some(out) => {
            String::from_utf8_lossy(&out.stdout).split('\0').filter(|f| !f.is_empty()).map(String::from).collect()
        }
        None => INPUTS.iter().flat_map(|i| walk(dir, Path::new(i))).collect(),
    };
    // A tracked file deleted from the work tree is not an input any more.
    files.retain(|f| dir.join(f).is_file());
    files.sort();
    files.dedup();
    files
}

fn walk(root: &Path, rel: &Path) -> Vec<String> {
    let path = root.join(rel);
    if path.is_file() {
        return vec![rel.to_string_lossy().into_owned()];
    }
    let Ok(entries) = std::fs::read_dir(&path) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| {
            !matches!(e.file_name().to_str(), Some("target" | "node_modules") | None)
                && !e.file_name().to_string_lossy().starts_with('.')
        })
        .flat_map(|e| walk(root, &rel.join(e.file_name())))
        .collect()
}

/// `rustc -vV` of the compiler cargo would use.
fn rustc_version() -> String {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    std::process::Command::new(rustc)
        .arg("-vV")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn read_binary(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::Usage(format!("cannot read the runtime binary {}: {e}", path.display())))
}

fn read_certs() -> Result<Vec<u8>, Error> {
    std::fs::read(CA_CERTS)
        .map_err(|e| Error::Usage(format!("cannot read the CA certificates {CA_CERTS}: {e} (install ca-certificates)")))
}

/// The image's `source` and `revision` labels: the repository, and the last commit that changed
/// an input (so that a commit that changes no input gives the same image).
fn labels() -> (String, String) {
    let tree = source_tree();
    let source = tree.and_then(|s| git(s, &["config", "--get", "remote.origin.url"])).unwrap_or_else(|| "aira".into());
    let last = [&["log", "-1", "--format=%H", "--"][..], INPUTS].concat();
    let revision = tree.and_then(|s| git(s, &last)).unwrap_or_else(|| UNKNOWN_REVISION.into());
    (source, revision)
}

/// Builds the image (the program first, unless it is prebuilt) and writes its layout to
/// `opts.out`, with the fingerprint it was built from beside it.
pub fn build(opts: &Options, note: &dyn Fn(&str)) -> Result<Built, Error> {
    let (program, labels) = (program(opts)?, labels());
    let source = fingerprint_of(&program, opts, &labels)?;
    let binary = match program {
        Program::Source(dir) => cargo_build(&dir, note)?,
        Program::Binary(path) => path,
    };
    let program = read_binary(&binary)?;
    check_static(&program).map_err(|e| Error::Usage(format!("{}: {e}", binary.display())))?;
    let (origin, revision) = labels;
    let image = oci::image(&tree(program, read_certs()?), &spec(opts.epoch, &origin, &revision))?;
    oci::write_layout(&opts.out, &image)
        .with_context(|| format!("write the image layout to {}", opts.out.display()))?;
    std::fs::write(opts.out.join(SOURCE_FILE), format!("{source}\n"))
        .with_context(|| format!("write {}", opts.out.join(SOURCE_FILE).display()))?;
    Ok(Built { image, out: opts.out.clone(), binary, revision, source })
}

/// The files of the image.
pub fn tree(program: Vec<u8>, certs: Vec<u8>) -> Tree {
    let u = UID;
    let mut t = Tree::default();
    t.file(BINARY_IN_IMAGE, 0o755, program)
        .file(CA_CERTS, 0o644, certs)
        .file(
            "/etc/passwd",
            0o644,
            format!("root:x:0:0:root:/root:/sbin/nologin\naira:x:{u}:{u}:aira:/tmp:/sbin/nologin\n").into_bytes(),
        )
        .file("/etc/group", 0o644, format!("root:x:0:\naira:x:{u}:\n").into_bytes())
        .dir("/tmp", 0o1777);
    t
}

pub fn spec(epoch: u64, source: &str, revision: &str) -> ConfigSpec {
    let created = aira_engine::time::rfc3339(epoch);
    ConfigSpec {
        epoch,
        user: format!("{UID}:{UID}"),
        entrypoint: vec![BINARY_IN_IMAGE.into()],
        cmd: vec!["api".into()],
        env: vec!["PATH=/usr/local/bin".into(), "AIRA_LISTEN=0.0.0.0:8080".into()],
        exposed_ports: vec!["8080/tcp".into()],
        labels: vec![
            ("org.opencontainers.image.created".into(), created),
            ("org.opencontainers.image.revision".into(), revision.into()),
            ("org.opencontainers.image.source".into(), source.into()),
            ("org.opencontainers.image.title".into(), "aira-runtime".into()),
        ],
    }
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").arg("-C").arg(dir).args(args).stderr(Stdio::null()).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// `cargo build --profile image` of the static runtime in the source tree (the workspace's
/// `[profile.image]`: optimised for size, fat LTO, no symbol table); the path cargo reports.
fn cargo_build(source: &Path, note: &dyn Fn(&str)) -> Result<PathBuf> {
    let profile = profile();
    note(&format!(
        "building aira-runtime (profile {profile}, static, {TARGET}) with cargo; the first build takes several minutes"
    ));
    build_runtime(source, &["--profile", &profile, "--target", TARGET], Some(RUSTFLAGS))
        .context("building the static aira-runtime failed (cargo's messages are above)")
}

/// `cargo build -p aira-runtime` in the source tree `aira` was built from, with `args`
/// (and `rustflags`); the executable cargo reports.
pub fn build_runtime(source: &Path, args: &[&str], rustflags: Option<&str>) -> Result<PathBuf> {
    let mut cmd = std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["build", "-p", "aira-runtime", "--bin", "aira-runtime", "--message-format=json-render-diagnostics"])
        .args(args)
        .current_dir(source)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(flags) = rustflags {
        // CARGO_ENCODED_RUSTFLAGS would win over RUSTFLAGS.
        cmd.env_remove("CARGO_ENCODED_RUSTFLAGS").env("RUSTFLAGS", flags);
    }
    // What cargo sets for a process it runs (`cargo run`, `cargo test`): build scripts that watch
    // these (ring's watch CARGO_PKG_*) would otherwise rebuild the runtime on every switch.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let cargo_set = [
            "CARGO_PKG_",
            "CARGO_BIN_EXE_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_PRIMARY_",
            "CARGO_TARGET_TMPDIR",
        ];
        if cargo_set.iter().any(|p| key.starts_with(p)) {
            cmd.env_remove(key.as_ref());
        }
    }
    let out = cmd.output().context("run cargo to build aira-runtime")?;
    if !out.status.success() {
        bail!("cargo could not build aira-runtime");
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "aira-runtime" {
            if let Some(exe) = msg["executable"].as_str() {
                return Ok(PathBuf::from(exe));
            }
        }
    }
    bail!("cargo built aira-runtime but did not report where the executable is")
}

/// An x86-64 ELF executable with no program interpreter (so no dynamic loader and no shared
/// libraries): what runs in an image that holds nothing else.
fn check_static(elf: &[u8]) -> Result<(), String> {
    const PT_INTERP: u32 = 3;
    const EM_X86_64: u16 = 62;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| elf.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()));
    let u64_at = |o: usize| elf.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
    // 64-bit, little-endian.
    if elf.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err("not a 64-bit little-endian ELF executable".into());
    }
    if u16_at(18) != Some(EM_X86_64) {
        return Err("not an x86-64 executable (the image is linux/amd64)".into());
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return Err("truncated ELF header".into());
    };
    for i in 0..phnum as usize {
        let at = phoff as usize + i * phentsize as usize;
        match u32_at(at) {
            Some(PT_INTERP) => {
                return Err(format!(
                    "dynamically linked (it needs a program interpreter): build it with RUSTFLAGS='{RUSTFLAGS}' --target {TARGET}"
                ))
            }
            Some(_) => {}
            None => return Err("truncated ELF program headers".into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(rel: &str) -> bool {
        INPUTS.iter().any(|i| rel == *i || rel.starts_with(&format!("{i}/")))
    }

    /// INPUTS against what cargo says the runtime depends on, and the files its sources include.
    #[test]
    fn the_inputs_hold_every_path_the_runtime_is_built_from() {
        let root = source_tree().expect("tests run in the source tree");
        let out = std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["metadata", "--format-version", "1", "--offline", "--no-deps"])
            .current_dir(root)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let runtime = meta["packages"].as_array().unwrap().iter().find(|p| p["name"] == "aira-runtime").unwrap();
        let mut paths = Vec::new();
        for dep in runtime["dependencies"].as_array().unwrap() {
            // Normal and build dependencies go into the binary; dev dependencies do not.
            if let (Some(path), false) = (dep["path"].as_str(), dep["kind"] == "dev") {
                paths.push(Path::new(path).strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
        assert!(!paths.is_empty(), "the runtime has path dependencies (crates/unify)");
        let mut sources = walk(root, Path::new("runtime/src"));
        sources.retain(|f| f.ends_with(".rs"));
        for file in &sources {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            let mut included: Vec<&str> = Vec::new();
            for macro_ in ["include_str!(\"", "include_bytes!(\""] {
                included.extend(text.split(macro_).skip(1).map(|p| p.split('"').next().unwrap_or_default()));
            }
            for included in included {
                let at = root.join(file).parent().unwrap().join(included).canonicalize().unwrap();
                paths.push(at.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
        assert!(paths.iter().any(|p| p.starts_with("runtime/web/")), "the web page's files were found: {paths:?}");
        let missing: Vec<&String> = paths.iter().filter(|p| !covered(p)).collect();
        assert!(missing.is_empty(), "build::INPUTS misses what the runtime is built from: {missing:?}");
        assert!(!covered("runtime/tests/it/main.rs") && !covered("src/main.rs"), "tests and the CLI are not inputs");
    }

    /// The inputs of a tree: what git would track under INPUTS (not ignored files, not other
    /// folders); the fingerprint changes with an input's contents and only then.
    #[test]
    fn input_files_are_what_git_would_track_under_the_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let write = |rel: &str, text: &str| {
            std::fs::create_dir_all(root.join(rel).parent().unwrap()).unwrap();
            std::fs::write(root.join(rel), text).unwrap();
        };
        write("Cargo.toml", "[workspace]");
        write("runtime/src/main.rs", "fn main() {}");
        write("runtime/web/app.js", "1");
        write("runtime/web/node_modules/x.js", "ignored");
        write("runtime/web/.gitignore", "node_modules/\n");
        write("runtime/tests/t.rs", "not an input");
        write("src/cli.rs", "not an input");
        // Without git: a walk that skips dependencies and dot files.
        assert_eq!(input_files(root), ["Cargo.toml", "runtime/src/main.rs", "runtime/web/app.js"]);
        let init = std::process::Command::new("git").arg("-C").arg(root).args(["init", "-q"]).status().unwrap();
        assert!(init.success());
        assert_eq!(
            input_files(root),
            ["Cargo.toml", "runtime/src/main.rs", "runtime/web/.gitignore", "runtime/web/app.js"]
        );

        let opts = Options { out: root.join("out"), binary: None, epoch: 0 };
        let labels = labels();
        let print = || fingerprint_of(&Program::Source(root.to_path_buf()), &opts, &labels).unwrap();
        let first = print();
        assert_eq!(print(), first, "the same tree, the same fingerprint");
        write("runtime/tests/t.rs", "changed, and still not an input");
        write("runtime/web/node_modules/x.js", "changed, and ignored");
        assert_eq!(print(), first);
        write("runtime/src/main.rs", "fn main() { }");
        assert_ne!(print(), first, "an input changed");
        let now = print();
        let other_epoch = Options { epoch: 1, ..opts };
        assert_ne!(fingerprint_of(&Program::Source(root.to_path_buf()), &other_epoch, &labels).unwrap(), now);
    }

    #[test]
    fn a_dynamic_executable_is_refused() {
        // This test binary itself is dynamically linked.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(check_static(&me).unwrap_err().contains("dynamically linked"));
        assert!(check_static(b"#!/bin/sh\n").unwrap_err().contains("not a 64-bit"));
    }

    #[test]
    fn the_image_runs_as_the_non_root_user_and_serves_on_8080() {
        let image = oci::image(&tree(b"x".to_vec(), b"certs".to_vec()), &spec(0, "src", "rev")).unwrap();
        let config: serde_json::Value = serde_json::from_slice(&image.config.bytes).unwrap();
        let c = &config["config"];
        assert_eq!(c["User"], "65532:65532");
        assert_eq!(c["Entrypoint"], serde_json::json!(["/usr/local/bin/aira-runtime"]));
        assert_eq!(c["Cmd"], serde_json::json!(["api"]));
        assert_eq!(c["Labels"]["org.opencontainers.image.revision"], "rev");
        assert_eq!(config["rootfs"]["diff_ids"][0], image.diff_ids[0].as_str());
    }
}

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

pub fn build(opts: &Options, note: &dyn Fn(&str)) -> Result<Built, Error> {
    let binary = match &opts.binary {
        Some(p) => p.clone(),
        None => match (source_tree(), beside_this_program()) {
            (Some(source), _) => cargo_build(source, note)?,
            // An installed release: its static runtime sits beside `aira`.
            (None, Some(runtime)) => runtime,
            (None, None) => return Err(Error::Usage(
                "this aira was not run from its source tree and has no aira-runtime beside it, so it cannot build the runtime: pass --binary PATH (or set AIRA_RUNTIME_STATIC_BIN) to a static aira-runtime, or install a release (both programs)".into(),
            )),
        },
    };
    let program = std::fs::read(&binary)
        .map_err(|e| Error::Usage(format!("cannot read the runtime binary {}: {e}", binary.display())))?;
    check_static(&program).map_err(|e| Error::Usage(format!("{}: {e}", binary.display())))?;
    let certs = std::fs::read(CA_CERTS).map_err(|e| {
        Error::Usage(format!("cannot read the CA certificates {CA_CERTS}: {e} (install ca-certificates)"))
    })?;

    let revision =
        source_tree().and_then(|s| git(s, &["rev-parse", "HEAD"])).unwrap_or_else(|| UNKNOWN_REVISION.into());
    let source =
        source_tree().and_then(|s| git(s, &["config", "--get", "remote.origin.url"])).unwrap_or_else(|| "aira".into());
    let image = oci::image(&tree(program, certs), &spec(opts.epoch, &source, &revision))?;
    oci::write_layout(&opts.out, &image)
        .with_context(|| format!("write the image layout to {}", opts.out.display()))?;
    Ok(Built { image, out: opts.out.clone(), binary, revision })
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
    note(&format!(
        "building aira-runtime (profile image, static, {TARGET}) with cargo; the first build takes several minutes"
    ));
    build_runtime(source, &["--profile", "image", "--target", TARGET], Some(RUSTFLAGS))
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

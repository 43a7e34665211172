//! The OCI image format, in memory: a reproducible gzip tar layer, the image config, the
//! manifest, and the image layout on disk (`oci-layout`, `index.json`, `blobs/sha256/…`).
//!
//! Reproducible means: the bytes depend only on the inputs. Entries are sorted, directories are
//! listed explicitly, owners are 0/0, every mtime is the given epoch, the gzip header carries
//! mtime 0 and no file name, and JSON is written in one fixed key order.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// `sha256:<hex>` of some bytes.
pub fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in hash {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// One entry of a layer. Paths are absolute (`/usr/local/bin/x`); parents are added implicitly
/// as directories (0755) unless listed.
#[derive(Debug, Clone)]
pub enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
}

/// What a layer is made of: path → entry.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
}

impl Tree {
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.entries.insert(format!("{}/", normalise(path).trim_end_matches('/')), Entry::Dir { mode });
        self
    }

    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) -> &mut Self {
        self.entries.insert(normalise(path), Entry::File { mode, data });
        self
    }

    /// Every entry with its parents, sorted by path (a directory right before what it holds).
    fn complete(&self) -> BTreeMap<String, Entry> {
        let mut all = self.entries.clone();
        for path in self.entries.keys() {
            let mut parent = path.trim_end_matches('/');
            while let Some(i) = parent.rfind('/') {
                parent = &parent[..i];
                all.entry(format!("{parent}/")).or_insert(Entry::Dir { mode: 0o755 });
            }
        }
        all
    }
}

/// Tar paths in image layers are relative to the root; directories end with `/`.
fn normalise(path: &str) -> String {
    path.trim_start_matches('/').to_string()
}

/// The uncompressed tar of a tree: sorted, owners 0/0, every mtime `epoch`.
pub fn tar(tree: &Tree, epoch: u64) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, entry) in tree.complete() {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(epoch);
        let (name, data): (String, &[u8]) = match &entry {
            Entry::Dir { mode } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_size(0);
                (path.clone(), &[])
            }
            Entry::File { mode, data } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                (path.clone(), data)
            }
        };
        header.set_path(&name).with_context(|| format!("tar path {name}"))?;
        header.set_cksum();
        builder.append(&header, data).with_context(|| format!("tar entry {name}"))?;
    }
    builder.into_inner().context("finish the tar")
}

/// gzip with a fixed header: mtime 0, no file name, fixed compression level.
pub fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut enc = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).context("gzip the layer")?;
    enc.finish().context("gzip the layer")
}

/// What goes into the image config besides the layers.
#[derive(Debug, Clone)]
pub struct ConfigSpec {
    /// Unix seconds for `created` (config and history).
    pub epoch: u64,
    pub user: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub exposed_ports: Vec<String>,
    pub labels: Vec<(String, String)>,
}

/// A blob with its descriptor fields.
#[derive(Debug, Clone)]
pub struct Blob {
    pub media_type: &'static str,
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn new(media_type: &'static str, bytes: Vec<u8>) -> Self {
        Blob { media_type, digest: digest(&bytes), bytes }
    }

    pub fn descriptor(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len() })
    }
}

/// A whole image: its layer(s), config and manifest, ready to be written or pushed.
#[derive(Debug, Clone)]
pub struct Image {
    pub layers: Vec<Blob>,
    /// sha256 of each uncompressed layer, in layer order.
    pub diff_ids: Vec<String>,
    pub config: Blob,
    pub manifest: Blob,
}

/// Builds the one-layer image of a tree.
pub fn image(tree: &Tree, spec: &ConfigSpec) -> Result<Image> {
    let tar = tar(tree, spec.epoch)?;
    let diff_id = digest(&tar);
    let layer = Blob::new(LAYER_TYPE, gzip(&tar)?);
    let created = aira_engine::time::rfc3339(spec.epoch);
    let ports: serde_json::Map<String, Value> = spec.exposed_ports.iter().map(|p| (p.clone(), json!({}))).collect();
    let labels: serde_json::Map<String, Value> =
        spec.labels.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let config = json!({
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": spec.user,
            "ExposedPorts": ports,
            "Env": spec.env,
            "Entrypoint": spec.entrypoint,
            "Cmd": spec.cmd,
            "WorkingDir": "/",
            "Labels": labels,
        },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created": created, "created_by": "aira image build" }],
    });
    let config = Blob::new(CONFIG_TYPE, serde_json::to_vec(&config)?);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    });
    let manifest = Blob::new(MANIFEST_TYPE, serde_json::to_vec(&manifest)?);
    Ok(Image { layers: vec![layer], diff_ids: vec![diff_id], config, manifest })
}

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

/// Writes an OCI image layout into `dir` (created if missing). Blobs of earlier builds that this
/// image does not use are removed, so the folder holds one image.
pub fn write_layout(dir: &Path, image: &Image) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).with_context(|| format!("create {}", blobs.display()))?;
    let mut keep = Vec::new();
    for blob in image.layers.iter().chain([&image.config, &image.manifest]) {
        write_atomic(&blob_path(dir, &blob.digest), &blob.bytes)?;
        keep.push(blob.digest.trim_start_matches("sha256:").to_string());
    }
    let mut manifest = image.manifest.descriptor();
    manifest["platform"] = json!({ "architecture": "amd64", "os": "linux" });
    let index = json!({ "schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": [manifest] });
    write_atomic(&dir.join("index.json"), &serde_json::to_vec(&index)?)?;
    write_atomic(&dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    for entry in std::fs::read_dir(&blobs).with_context(|| format!("list {}", blobs.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_blob = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if is_blob && !keep.contains(&name) {
            std::fs::remove_file(entry.path()).with_context(|| format!("remove stale blob {name}"))?;
        }
    }
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))
}

/// A blob read back from a layout, digest checked.
pub fn read_blob(dir: &Path, digest_: &str) -> Result<Vec<u8>> {
    let path = blob_path(dir, digest_);
    let bytes = std::fs::read(&path).with_context(|| format!("read blob {digest_} ({})", path.display()))?;
    let actual = digest(&bytes);
    if actual != digest_ {
        bail!("blob {} is corrupt: its content hashes to {actual}", path.display());
    }
    Ok(bytes)
}

/// The image of a layout written by [`write_layout`] (or any layout with one image manifest).
pub fn read_layout(dir: &Path) -> Result<Image> {
    let layout = std::fs::read(dir.join("oci-layout"))
        .with_context(|| format!("{} is not an OCI image layout (no oci-layout file)", dir.display()))?;
    let layout: Value = serde_json::from_slice(&layout).context("parse oci-layout")?;
    if layout["imageLayoutVersion"] != "1.0.0" {
        bail!("unsupported image layout version {}", layout["imageLayoutVersion"]);
    }
    let index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).context("read index.json")?)
        .context("parse index.json")?;
    let manifests: Vec<&Value> = index["manifests"]
        .as_array()
        .map(|m| m.iter().filter(|d| d["mediaType"] == MANIFEST_TYPE).collect())
        .unwrap_or_default();
    let [descriptor] = manifests[..] else {
        bail!("index.json lists {} image manifests; one is expected", manifests.len());
    };
    let blob = |d: &Value, media_type: &'static str| -> Result<Blob> {
        let digest = d["digest"].as_str().context("a descriptor without digest")?;
        let bytes = read_blob(dir, digest)?;
        Ok(Blob { media_type, digest: digest.into(), bytes })
    };
    let manifest = blob(descriptor, MANIFEST_TYPE)?;
    let parsed: Value = serde_json::from_slice(&manifest.bytes).context("parse the manifest")?;
    let config = blob(&parsed["config"], CONFIG_TYPE)?;
    let mut layers = Vec::new();
    for d in parsed["layers"].as_array().context("a manifest without layers")? {
        if d["mediaType"] != LAYER_TYPE {
            bail!("unsupported layer media type {}", d["mediaType"]);
        }
        layers.push(blob(d, LAYER_TYPE)?);
    }
    let config_json: Value = serde_json::from_slice(&config.bytes).context("parse the image config")?;
    let diff_ids = config_json["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| a.iter().filter_map(|d| d.as_str().map(String::from)).collect())
        .unwrap_or_default();
    Ok(Image { layers, diff_ids, config, manifest })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Tree {
        let mut t = Tree::default();
        // Inserted out of order on purpose.
        t.file("/usr/local/bin/app", 0o755, b"#!binary".to_vec())
            .file("/etc/passwd", 0o644, b"aira:x:65532:65532::/tmp:/sbin/nologin\n".to_vec())
            .dir("/tmp", 0o1777);
        t
    }

    fn spec(epoch: u64) -> ConfigSpec {
        ConfigSpec {
            epoch,
            user: "65532:65532".into(),
            entrypoint: vec!["/usr/local/bin/app".into()],
            cmd: vec!["api".into()],
            env: vec!["A=1".into()],
            exposed_ports: vec!["8080/tcp".into()],
            labels: vec![("k".into(), "v".into())],
        }
    }

    #[test]
    fn layer_bytes_depend_only_on_the_inputs() {
        let a = gzip(&tar(&sample(), 0).unwrap()).unwrap();
        let b = gzip(&tar(&sample(), 0).unwrap()).unwrap();
        assert_eq!(a, b);
        // gzip header: magic, deflate, no flags (so no file name), mtime 0.
        assert_eq!(&a[..8], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
        assert_ne!(tar(&sample(), 0).unwrap(), tar(&sample(), 1).unwrap());
    }

    #[test]
    fn layer_lists_sorted_entries_with_parents_owners_and_modes() {
        let bytes = tar(&sample(), 1_700_000_000).unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let got: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                assert_eq!((h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()), (0, 0, 1_700_000_000));
                format!("{} {:o}", e.path().unwrap().display(), h.mode().unwrap())
            })
            .collect();
        assert_eq!(
            got,
            [
                "etc/ 755",
                "etc/passwd 644",
                "tmp/ 1777",
                "usr/ 755",
                "usr/local/ 755",
                "usr/local/bin/ 755",
                "usr/local/bin/app 755"
            ]
        );
    }

    #[test]
    fn same_inputs_give_the_same_digest_and_layout_bytes() {
        let one = image(&sample(), &spec(0)).unwrap();
        let two = image(&sample(), &spec(0)).unwrap();
        assert_eq!(one.manifest.digest, two.manifest.digest);
        assert_ne!(one.manifest.digest, image(&sample(), &spec(86_400)).unwrap().manifest.digest);

        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write_layout(a.path(), &one).unwrap();
        write_layout(b.path(), &two).unwrap();
        for f in ["index.json", "oci-layout"] {
            assert_eq!(std::fs::read(a.path().join(f)).unwrap(), std::fs::read(b.path().join(f)).unwrap());
        }
        let back = read_layout(a.path()).unwrap();
        assert_eq!(back.manifest.digest, one.manifest.digest);
        assert_eq!(back.layers[0].bytes, one.layers[0].bytes);
        assert_eq!(back.diff_ids, one.diff_ids);
        let config: Value = serde_json::from_slice(&back.config.bytes).unwrap();
        assert_eq!(config["created"], "1970-01-01T00:00:00Z");
        assert_eq!(config["config"]["ExposedPorts"], json!({ "8080/tcp": {} }));
    }

    #[test]
    fn rewriting_a_layout_drops_the_old_blobs() {
        let dir = tempfile::tempdir().unwrap();
        write_layout(dir.path(), &image(&sample(), &spec(0)).unwrap()).unwrap();
        write_layout(dir.path(), &image(&sample(), &spec(1)).unwrap()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("blobs/sha256")).unwrap().count(), 3);
        read_layout(dir.path()).unwrap();
    }
}

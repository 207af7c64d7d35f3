//! Container images without a container engine or a registry: a folder of
//! files packed as one layer into an OCI image layout archive, which
//! `ctr images import` (containerd) and `kind load image-archive` take as it
//! is. Used for ferrolb's own image (the binaries cargo built) and for the
//! test images (the pod sandbox `pause` and the `echo` server).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::controlplane::workspace_root;

/// The tag of the images this checkout builds: the workspace version, never
/// `latest` (a kubelet always pulls `latest`).
pub const TAG: &str = env!("CARGO_PKG_VERSION");
/// ferrolb's image, as the `config/local` overlay names it.
pub const FERROLB: &str = "localhost/ferrolb";
/// The pod sandbox image the test nodes' containerd uses.
pub const PAUSE: &str = "localhost/pause";
/// The HTTP server answering with its Pod and node names.
pub const ECHO: &str = "localhost/echo";

/// A file to put into an image: where it goes and its bytes' source.
struct Entry {
    source: PathBuf,
    mode: u32,
}

/// An image being assembled.
#[derive(Default)]
pub struct Image {
    files: BTreeMap<String, Entry>,
    entrypoint: Vec<String>,
    user: Option<String>,
}

fn sha256(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl Image {
    /// Adds the file at `source` as `/path` in the image.
    pub fn file(&mut self, path: &str, source: &Path, mode: u32) -> &mut Image {
        self.files.insert(
            path.trim_start_matches('/').to_string(),
            Entry {
                source: source.to_path_buf(),
                mode,
            },
        );
        self
    }

    /// Adds an executable and the shared libraries it loads (as `ldd` lists
    /// them, at the same paths), so a dynamically linked binary runs in an
    /// image with nothing else in it.
    pub fn executable(&mut self, path: &str, source: &Path) -> Result<&mut Image> {
        self.file(path, source, 0o755);
        let out = Command::new("ldd")
            .arg(source)
            .output()
            .context("running ldd")?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let library = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next(),
                None => line
                    .split_whitespace()
                    .next()
                    .filter(|p| p.starts_with('/')),
            };
            if let Some(library) = library.filter(|l| l.starts_with('/')) {
                let real = fs::canonicalize(library)?;
                self.file(library, &real, 0o755);
            }
        }
        Ok(self)
    }

    /// The command the image runs.
    pub fn entrypoint(&mut self, command: &[&str]) -> &mut Image {
        self.entrypoint = command.iter().map(|s| s.to_string()).collect();
        self
    }

    /// The user it runs as (`uid:gid`).
    pub fn user(&mut self, user: &str) -> &mut Image {
        self.user = Some(user.to_string());
        self
    }

    /// Writes the OCI layout archive `out` naming the image `reference`
    /// (`name:tag`). The same files give the same bytes (fixed times and
    /// owners), so the digest changes only when the content does.
    pub fn write(&self, reference: &str, out: &Path) -> Result<String> {
        let mut layer = tar::Builder::new(Vec::new());
        let mut folders = std::collections::BTreeSet::new();
        for path in self.files.keys() {
            let mut at = Path::new(path).parent();
            while let Some(folder) = at.filter(|p| !p.as_os_str().is_empty()) {
                folders.insert(folder.to_string_lossy().into_owned());
                at = folder.parent();
            }
        }
        let header = |size: u64, mode: u32, kind: tar::EntryType| {
            let mut header = tar::Header::new_gnu();
            header.set_size(size);
            header.set_mode(mode);
            header.set_entry_type(kind);
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            header
        };
        for folder in &folders {
            let mut h = header(0, 0o755, tar::EntryType::Directory);
            layer.append_data(&mut h, format!("{folder}/"), std::io::empty())?;
        }
        for (path, entry) in &self.files {
            let bytes = fs::read(&entry.source)
                .with_context(|| format!("reading {}", entry.source.display()))?;
            let mut h = header(bytes.len() as u64, entry.mode, tar::EntryType::Regular);
            layer.append_data(&mut h, path, bytes.as_slice())?;
        }
        let layer = layer.into_inner()?;
        let layer_digest = sha256(&layer);
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "User": self.user.clone().unwrap_or_default(),
                "Entrypoint": self.entrypoint,
                "Env": ["PATH=/"],
                "WorkingDir": "/",
            },
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
        }))?;
        let config_digest = sha256(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": format!("sha256:{config_digest}"),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": format!("sha256:{layer_digest}"),
                "size": layer.len(),
            }],
        }))?;
        let manifest_digest = sha256(&manifest);
        let tag = reference.rsplit_once(':').map(|(_, t)| t).unwrap_or(TAG);
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{manifest_digest}"),
                "size": manifest.len(),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": reference,
                    "org.opencontainers.image.ref.name": tag,
                },
            }],
        }))?;
        let mut archive = tar::Builder::new(Vec::new());
        let mut put = |name: &str, bytes: &[u8]| -> Result<()> {
            let mut h = header(bytes.len() as u64, 0o644, tar::EntryType::Regular);
            archive.append_data(&mut h, name, bytes)?;
            Ok(())
        };
        put("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        put("index.json", &index)?;
        for (digest, bytes) in [
            (&layer_digest, &layer),
            (&config_digest, &config),
            (&manifest_digest, &manifest),
        ] {
            put(&format!("blobs/sha256/{digest}"), bytes)?;
        }
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut file = fs::File::create(out)?;
        file.write_all(&archive.into_inner()?)?;
        Ok(format!("sha256:{manifest_digest}"))
    }
}

/// Compiles one of the test programs in `e2e/images/` statically.
fn compile(source: &str, out: &Path) -> Result<()> {
    let path = workspace_root().join("e2e/images").join(source);
    let status = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(out)
        .arg(&path)
        .status()
        .context("running cc (apt-get install gcc libc6-dev)")?;
    if !status.success() {
        bail!("cc {} failed", path.display());
    }
    Ok(())
}

/// Strips debug sections from a copy of `binary` (a debug build is mostly
/// debug information), into `dir`.
fn stripped(binary: &Path, dir: &Path) -> Result<PathBuf> {
    let out = dir.join(binary.file_name().context("binary name")?);
    let status = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(binary)
        .arg(&out)
        .status()
        .context("running objcopy")?;
    if !status.success() {
        bail!("objcopy {} failed", binary.display());
    }
    Ok(out)
}

/// The archives `build_all` writes, by image reference.
#[derive(Clone, Debug)]
pub struct Built {
    /// `(reference, archive)` for ferrolb, pause and echo.
    pub archives: Vec<(String, PathBuf)>,
}

/// ferrolb's image (the three binaries of `binaries`, stripped) as
/// `out/ferrolb-<TAG>.tar`, tagged `reference`: `localhost/ferrolb` for the
/// nodes here, the registry name `config/default` pins for a release.
pub fn ferrolb_image(binaries: &Path, out: &Path, reference: &str) -> Result<PathBuf> {
    fs::create_dir_all(out)?;
    let work = tempfile::tempdir()?;
    let mut ferrolb = Image::default();
    for name in ["ferrolb-operator", "ferrolb-speaker", "ferrolb-webhook"] {
        let binary = binaries.join(name);
        if !binary.exists() {
            bail!("{} is missing: cargo build --bins first", binary.display());
        }
        ferrolb.executable(&format!("/{name}"), &stripped(&binary, work.path())?)?;
    }
    ferrolb
        .entrypoint(&["/ferrolb-operator"])
        .user("65532:65532");
    let path = out.join(format!("ferrolb-{TAG}.tar"));
    ferrolb.write(reference, &path)?;
    Ok(path)
}

/// Builds ferrolb's image from the binaries in `binaries` (cargo's output
/// folder) and the two test images, into `out`.
pub fn build_all(binaries: &Path, out: &Path) -> Result<Built> {
    let work = tempfile::tempdir()?;
    let reference = format!("{FERROLB}:{TAG}");
    let path = ferrolb_image(binaries, out, &reference)?;
    let mut archives = vec![(reference, path)];
    for (name, source, reference) in [
        ("pause", "pause.c", format!("{PAUSE}:{TAG}")),
        ("echo", "echo.c", format!("{ECHO}:{TAG}")),
    ] {
        let binary = work.path().join(name);
        compile(source, &binary)?;
        let mut image = Image::default();
        image
            .file(&format!("/{name}"), &binary, 0o755)
            .entrypoint(&[&format!("/{name}")]);
        let path = out.join(format!("{name}-{TAG}.tar"));
        image.write(&reference, &path)?;
        archives.push((reference, path));
    }
    Ok(Built { archives })
}

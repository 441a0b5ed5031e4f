//! The node's identity key, kept in the data directory.

use std::io::Write;
use std::path::Path;

use libp2p::identity::Keypair;

use crate::error::NetabaseError;

/// The key file's name inside the data directory.
pub(crate) const IDENTITY_FILE: &str = "identity.key";

/// Loads the keypair stored in `dir` (`identity.key`), or generates an Ed25519 one and
/// stores it there (readable by the owner only), so the peer id stays the same across
/// restarts. `dir` must exist. A node calls it when it opens its data directory; tools use
/// it to learn a node's peer id before starting it.
pub fn load_or_create(dir: &Path) -> Result<Keypair, NetabaseError> {
    let path = dir.join(IDENTITY_FILE);
    let error = |reason: String| NetabaseError::Identity {
        path: path.clone(),
        reason,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            Keypair::from_protobuf_encoding(&bytes).map_err(|e| error(format!("not a key: {e}")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let keypair = Keypair::generate_ed25519();
            let bytes = keypair
                .to_protobuf_encoding()
                .map_err(|e| error(e.to_string()))?;
            // Written to a temporary file first, synced and renamed, and the directory
            // synced after the rename: a crash never leaves a half-written key behind, and
            // a power cut after this returns never takes the key (and so the peer id) away.
            let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&tmp).map_err(|e| error(e.to_string()))?;
            file.write_all(&bytes).map_err(|e| error(e.to_string()))?;
            file.sync_all().map_err(|e| error(e.to_string()))?;
            std::fs::rename(&tmp, &path).map_err(|e| error(e.to_string()))?;
            sync_dir(dir).map_err(|e| error(format!("cannot sync the directory: {e}")))?;
            Ok(keypair)
        }
        Err(e) => Err(error(e.to_string())),
    }
}

/// Creates directory `dir` and its missing ancestors, and syncs the parent of each one it
/// created, so that a power cut never takes a new data directory (and the identity key and
/// database in it) away.
pub(crate) fn create_data_dir(dir: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        missing.push(path);
        at = path.parent();
    }
    std::fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        match created.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(parent) => sync_dir(parent)?,
            None => sync_dir(Path::new("."))?,
        }
    }
    Ok(())
}

/// Makes the entries of directory `dir` (a new or renamed file) durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Directories cannot be opened and synced on this platform.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

/// The core's signing key for a libp2p identity (Ed25519 only: other key types cannot sign
/// records, and such a node's puts fail with `ApiError::NoIdentity`).
pub fn core_keypair(keypair: &libp2p::identity::Keypair) -> Option<netabase_core::Keypair> {
    let ed25519 = keypair.clone().try_into_ed25519().ok()?;
    let secret: [u8; 32] = ed25519.secret().as_ref().try_into().ok()?;
    Some(netabase_core::Keypair::from_secret(secret))
}

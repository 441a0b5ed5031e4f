//! A FUSE file system whose state is volatile until it is synced, for power cuts of whole
//! processes (a node, sled, the identity file).
//!
//! - A file's data (and length) is a [`Disk`]: volatile until that file's `fsync` or
//!   `fdatasync`; a cut keeps a seeded subset of the unsynced blocks, like the in-process
//!   model.
//! - A directory's entries (create, unlink, rename, link, mkdir, rmdir) are volatile until
//!   that directory's own `fsync`; a cut keeps each directory as it was at its last sync.
//!   A rename inside one directory is therefore atomic: after a cut the directory shows the
//!   old name or the new one, never both or neither.
//! - Files are opened with direct I/O: every read and write reaches this file system (the
//!   kernel caches nothing), and the kernel refuses shared writable `mmap` of them.
//! - [`Mounted::fail_next_fsync`] makes the next file `fsync` fail with `EIO`.
//!
//! A cut ([`Mounted::cut`]): the caller has killed the processes that used the mount;
//! the FUSE connection is aborted, the mount detached, and what survives is returned as
//! an [`Image`], which [`mount`] serves again as a fresh instance.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use fuser::{
    BackgroundSession, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, MountOption, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};

use crate::{Disk, Retention, Rng};

/// The kernel caches no entry and no attribute: every lookup asks the file system.
const TTL: Duration = Duration::ZERO;

#[derive(Debug)]
enum Node {
    File { data: Disk, perm: u16 },
    Dir { perm: u16 },
}

type Entries = BTreeMap<OsString, u64>;

#[derive(Debug, Default)]
struct State {
    nodes: HashMap<u64, Node>,
    /// Directory entries as the processes see them.
    volatile: HashMap<u64, Entries>,
    /// Directory entries as of each directory's last sync.
    durable: HashMap<u64, Entries>,
    next_ino: u64,
    /// File syncs that fail with `EIO` before the next one that works.
    failing_fsyncs: u32,
    /// File syncs that failed so.
    failed_fsyncs: u64,
    fsyncs: u64,
    dir_fsyncs: u64,
    /// Set by a cut: every request fails.
    dead: bool,
}

/// What survives a cut: the directories as of their last sync and each reachable file's
/// surviving data.
#[derive(Debug, Clone, Default)]
pub struct Image {
    dirs: HashMap<u64, (u16, Entries)>,
    files: HashMap<u64, (u16, Vec<u8>)>,
}

impl Image {
    /// An empty file system (its root only).
    pub fn empty() -> Self {
        let mut image = Image::default();
        image.dirs.insert(1, (0o755, Entries::new()));
        image
    }
}

impl State {
    fn from_image(image: Image) -> Self {
        let mut state = State {
            next_ino: 2,
            ..State::default()
        };
        for (ino, (perm, entries)) in image.dirs {
            state.nodes.insert(ino, Node::Dir { perm });
            state.volatile.insert(ino, entries.clone());
            state.durable.insert(ino, entries);
            state.next_ino = state.next_ino.max(ino + 1);
        }
        for (ino, (perm, data)) in image.files {
            state.nodes.insert(
                ino,
                Node::File {
                    data: Disk::from_image(data),
                    perm,
                },
            );
            state.next_ino = state.next_ino.max(ino + 1);
        }
        state
    }

    /// What a cut leaves: the durable directory tree from the root, each file with the
    /// part of its unsynced data that `rng` keeps.
    fn cut(&mut self, rng: &mut Rng, retention: Retention) -> Image {
        self.dead = true;
        let mut image = Image::default();
        let mut todo = vec![1u64];
        while let Some(dir) = todo.pop() {
            if image.dirs.contains_key(&dir) {
                continue;
            }
            let entries = self.durable.get(&dir).cloned().unwrap_or_default();
            let perm = match self.nodes.get(&dir) {
                Some(Node::Dir { perm }) => *perm,
                _ => 0o755,
            };
            for &ino in entries.values() {
                match self.nodes.get(&ino) {
                    Some(Node::Dir { .. }) => todo.push(ino),
                    Some(Node::File { data, perm }) => {
                        if let std::collections::hash_map::Entry::Vacant(slot) =
                            image.files.entry(ino)
                        {
                            slot.insert((*perm, data.cut_now(rng.next_u64(), retention)));
                        }
                    }
                    None => {}
                }
            }
            image.dirs.insert(dir, (perm, entries));
        }
        image
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let node = self.nodes.get(&ino)?;
        let (kind, perm, size, nlink) = match node {
            Node::Dir { perm } => (FileType::Directory, *perm, 0, 2),
            Node::File { data, perm } => {
                let links = self
                    .volatile
                    .values()
                    .flat_map(|e| e.values())
                    .filter(|&&i| i == ino)
                    .count() as u32;
                (FileType::RegularFile, *perm, data.len().unwrap_or(0), links)
            }
        };
        let now = SystemTime::UNIX_EPOCH;
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn lookup(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        let entries = self.volatile.get(&parent).ok_or(Errno::ENOTDIR)?;
        entries.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn is_dir(&self, ino: u64) -> bool {
        matches!(self.nodes.get(&ino), Some(Node::Dir { .. }))
    }

    fn add(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<u64, Errno> {
        let entries = self.volatile.get(&parent).ok_or(Errno::ENOTDIR)?;
        if entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        if matches!(node, Node::Dir { .. }) {
            self.volatile.insert(ino, Entries::new());
        }
        self.nodes.insert(ino, node);
        if let Some(entries) = self.volatile.get_mut(&parent) {
            entries.insert(name.to_owned(), ino);
        }
        Ok(ino)
    }

    fn file(&self, ino: u64) -> Result<&Disk, Errno> {
        match self.nodes.get(&ino) {
            Some(Node::File { data, .. }) => Ok(data),
            Some(Node::Dir { .. }) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }
}

/// The FUSE side of the file system.
struct PowerFs(Arc<Mutex<State>>);

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PowerFs {
    fn state(&self) -> Result<MutexGuard<'_, State>, Errno> {
        let state = lock(&self.0);
        if state.dead {
            return Err(Errno::EIO);
        }
        Ok(state)
    }
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

impl Filesystem for PowerFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = self.state().and_then(|s| {
            let ino = s.lookup(parent.0, name)?;
            s.attr(ino).ok_or(Errno::ENOENT)
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self
            .state()
            .and_then(|s| s.attr(ino.0).ok_or(Errno::ENOENT))
        {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = self.state().and_then(|mut s| {
            if let Some(len) = size {
                s.file(ino.0)?.set_len(len).map_err(|e| io_errno(&e))?;
            }
            if let Some(mode) = mode {
                match s.nodes.get_mut(&ino.0) {
                    Some(Node::File { perm, .. } | Node::Dir { perm }) => {
                        *perm = (mode & 0o7777) as u16;
                    }
                    None => return Err(Errno::ENOENT),
                }
            }
            s.attr(ino.0).ok_or(Errno::ENOENT)
        });
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let result = self.state().and_then(|mut s| {
            let perm = (mode & !umask & 0o7777) as u16;
            let ino = s.add(parent.0, name, Node::Dir { perm })?;
            s.attr(ino).ok_or(Errno::ENOENT)
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.state().and_then(|mut s| {
            let ino = s.lookup(parent.0, name)?;
            if s.is_dir(ino) {
                return Err(Errno::EISDIR);
            }
            if let Some(entries) = s.volatile.get_mut(&parent.0) {
                entries.remove(name);
            }
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.state().and_then(|mut s| {
            let ino = s.lookup(parent.0, name)?;
            if !s.is_dir(ino) {
                return Err(Errno::ENOTDIR);
            }
            if s.volatile.get(&ino).is_some_and(|e| !e.is_empty()) {
                return Err(Errno::ENOTEMPTY);
            }
            if let Some(entries) = s.volatile.get_mut(&parent.0) {
                entries.remove(name);
            }
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = self.state().and_then(|mut s| {
            if flags.contains(RenameFlags::RENAME_EXCHANGE)
                || flags.contains(RenameFlags::RENAME_WHITEOUT)
            {
                return Err(Errno::EINVAL);
            }
            let ino = s.lookup(parent.0, name)?;
            match s.lookup(newparent.0, newname) {
                Ok(_) if flags.contains(RenameFlags::RENAME_NOREPLACE) => {
                    return Err(Errno::EEXIST);
                }
                Ok(old) if s.is_dir(old) => {
                    if !s.is_dir(ino) {
                        return Err(Errno::EISDIR);
                    }
                    if s.volatile.get(&old).is_some_and(|e| !e.is_empty()) {
                        return Err(Errno::ENOTEMPTY);
                    }
                }
                Ok(_) if s.is_dir(ino) => return Err(Errno::ENOTDIR),
                Ok(_) => {}
                Err(e) if e == Errno::ENOENT => {}
                Err(e) => return Err(e),
            }
            if let Some(entries) = s.volatile.get_mut(&parent.0) {
                entries.remove(name);
            }
            if let Some(entries) = s.volatile.get_mut(&newparent.0) {
                entries.insert(newname.to_owned(), ino);
            }
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let result = self.state().and_then(|mut s| {
            if s.is_dir(ino.0) {
                return Err(Errno::EPERM);
            }
            s.file(ino.0)?;
            let entries = s.volatile.get_mut(&newparent.0).ok_or(Errno::ENOTDIR)?;
            if entries.contains_key(newname) {
                return Err(Errno::EEXIST);
            }
            entries.insert(newname.to_owned(), ino.0);
            s.attr(ino.0).ok_or(Errno::ENOENT)
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: fuser::OpenFlags, reply: ReplyOpen) {
        match self.state().and_then(|s| s.file(ino.0).map(|_| ())) {
            // Direct I/O: nothing is cached in the kernel, and shared writable mmap is
            // refused.
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let result = self.state().and_then(|mut s| {
            let perm = (mode & !umask & 0o7777) as u16;
            let ino = s.add(
                parent.0,
                name,
                Node::File {
                    data: Disk::new(),
                    perm,
                },
            )?;
            s.attr(ino).ok_or(Errno::ENOENT)
        });
        match result {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let result = self.state().and_then(|s| {
            let mut buf = vec![0; size as usize];
            let n = s
                .file(ino.0)?
                .read_at(offset, &mut buf)
                .map_err(|e| io_errno(&e))?;
            buf.truncate(n);
            Ok(buf)
        });
        match result {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let result = self
            .state()
            .and_then(|s| s.file(ino.0)?.write(offset, data).map_err(|e| io_errno(&e)));
        match result {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.state() {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let result = self.state().and_then(|mut s| {
            s.fsyncs += 1;
            if s.failing_fsyncs > 0 {
                s.failing_fsyncs -= 1;
                s.failed_fsyncs += 1;
                return Err(Errno::EIO);
            }
            s.file(ino.0)?.sync().map_err(|e| io_errno(&e))
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let result = self.state().and_then(|s| {
            let entries = s.volatile.get(&ino.0).ok_or(Errno::ENOTDIR)?;
            let mut list = vec![
                (ino.0, FileType::Directory, OsString::from(".")),
                (ino.0, FileType::Directory, OsString::from("..")),
            ];
            for (name, &child) in entries {
                let kind = if s.is_dir(child) {
                    FileType::Directory
                } else {
                    FileType::RegularFile
                };
                list.push((child, kind, name.clone()));
            }
            Ok(list)
        });
        match result {
            Ok(list) => {
                for (i, (child, kind, name)) in list.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(child), (i + 1) as u64, kind, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let result = self.state().and_then(|mut s| {
            s.dir_fsyncs += 1;
            let entries = s.volatile.get(&ino.0).cloned().ok_or(Errno::ENOTDIR)?;
            s.durable.insert(ino.0, entries);
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(1 << 20, 1 << 19, 1 << 19, 1 << 16, 1 << 15, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }
}

/// A mounted instance of the file system.
pub struct Mounted {
    state: Arc<Mutex<State>>,
    session: Option<BackgroundSession>,
    at: PathBuf,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted").field("at", &self.at).finish()
    }
}

/// Mounts a file system holding `image` at directory `at` (which must exist).
pub fn mount(image: Image, at: &Path) -> std::io::Result<Mounted> {
    let state = Arc::new(Mutex::new(State::from_image(image)));
    let mut config = fuser::Config::default();
    config.mount_options = vec![MountOption::FSName("netabase-powercut".into())];
    let session = fuser::spawn_mount(PowerFs(Arc::clone(&state)), at, &config)?;
    Ok(Mounted {
        state,
        session: Some(session),
        at: at.to_path_buf(),
    })
}

/// Counters of a mounted file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// File syncs (`fsync`, `fdatasync`), failed ones included.
    pub fsyncs: u64,
    /// File syncs that failed with an injected `EIO`.
    pub failed_fsyncs: u64,
    /// Directory syncs.
    pub dir_fsyncs: u64,
}

impl Mounted {
    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.at
    }

    /// Makes the next file sync fail with `EIO` (and make nothing durable).
    pub fn fail_next_fsync(&self) {
        lock(&self.state).failing_fsyncs = 1;
    }

    /// Its counters.
    pub fn stats(&self) -> Stats {
        let s = lock(&self.state);
        Stats {
            fsyncs: s.fsyncs,
            failed_fsyncs: s.failed_fsyncs,
            dir_fsyncs: s.dir_fsyncs,
        }
    }

    /// Cuts the power: every later request fails, the FUSE connection is aborted and the
    /// mount detached; returns what survives, drawn from `seed` with `retention` for the
    /// unsynced file data (unsynced directory changes are all lost). Kill the processes
    /// that use the mount first.
    pub fn cut(mut self, seed: u64, retention: Retention) -> Image {
        let image = lock(&self.state).cut(&mut Rng::new(seed), retention);
        self.unmount();
        image
    }

    fn unmount(&mut self) {
        abort_connection(&self.at);
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        lock(&self.state).dead = true;
        self.unmount();
    }
}

/// Aborts the FUSE connection of the mount at `at` (through the `fusectl` file system,
/// mounted if it is not), so that no request of it is left waiting.
fn abort_connection(at: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(at) else {
        return;
    };
    let minor = libc::minor(meta.dev());
    let connections = Path::new("/sys/fs/fuse/connections");
    if !connections.join(minor.to_string()).exists() {
        let _ = std::process::Command::new("mount")
            .args(["-t", "fusectl", "fusectl"])
            .arg(connections)
            .stderr(std::process::Stdio::null())
            .status();
    }
    let _ = std::fs::write(connections.join(minor.to_string()).join("abort"), "1");
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn sync_dir(dir: &Path) {
        std::fs::File::open(dir).unwrap().sync_all().unwrap();
    }

    /// Mounts an empty file system in a new temporary directory.
    fn fresh() -> (tempfile::TempDir, Mounted) {
        let dir = tempfile::tempdir().unwrap();
        let mounted = mount(Image::empty(), dir.path()).expect("mount (needs root and /dev/fuse)");
        (dir, mounted)
    }

    fn remount(mounted: Mounted, seed: u64, retention: Retention) -> Mounted {
        let at = mounted.path().to_path_buf();
        let image = mounted.cut(seed, retention);
        mount(image, &at).unwrap()
    }

    #[test]
    fn an_unsynced_write_is_lost_and_a_synced_one_stays() {
        let (_dir, m) = fresh();
        let path = m.path().join("f");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(b"synced").unwrap();
        file.sync_data().unwrap();
        sync_dir(m.path());
        file.write_all(b" and not").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"synced and not");
        drop(file);
        let m = remount(m, 1, Retention::NONE);
        assert_eq!(std::fs::read(m.path().join("f")).unwrap(), b"synced");
    }

    #[test]
    fn a_synced_file_without_a_directory_sync_is_gone() {
        let (_dir, m) = fresh();
        let mut file = std::fs::File::create(m.path().join("f")).unwrap();
        file.write_all(b"data").unwrap();
        file.sync_all().unwrap();
        drop(file);
        let m = remount(m, 1, Retention::ALL);
        assert!(!m.path().join("f").exists());
    }

    #[test]
    fn a_rename_without_a_directory_sync_reverts() {
        let (_dir, m) = fresh();
        let tmp = m.path().join("key.tmp");
        let mut file = std::fs::File::create(&tmp).unwrap();
        file.write_all(b"first").unwrap();
        file.sync_all().unwrap();
        drop(file);
        sync_dir(m.path());
        std::fs::rename(&tmp, m.path().join("key")).unwrap();
        let m = remount(m, 1, Retention::ALL);
        assert!(!m.path().join("key").exists(), "the rename reverted");
        assert_eq!(std::fs::read(m.path().join("key.tmp")).unwrap(), b"first");

        std::fs::rename(m.path().join("key.tmp"), m.path().join("key")).unwrap();
        sync_dir(m.path());
        let m = remount(m, 2, Retention::NONE);
        assert!(!m.path().join("key.tmp").exists());
        assert_eq!(std::fs::read(m.path().join("key")).unwrap(), b"first");
    }

    #[test]
    fn links_unlinks_and_directories_are_volatile_until_their_directory_is_synced() {
        let (_dir, m) = fresh();
        std::fs::create_dir(m.path().join("d")).unwrap();
        sync_dir(m.path());
        let a = m.path().join("d/a");
        std::fs::write(&a, b"x").unwrap();
        std::fs::File::open(&a).unwrap().sync_all().unwrap();
        std::fs::hard_link(&a, m.path().join("d/b")).unwrap();
        assert_eq!(std::fs::read(m.path().join("d/b")).unwrap(), b"x");
        sync_dir(&m.path().join("d"));
        std::fs::remove_file(&a).unwrap();
        std::fs::create_dir(m.path().join("e")).unwrap();
        let m = remount(m, 3, Retention::ALL);
        assert_eq!(std::fs::read(m.path().join("d/a")).unwrap(), b"x");
        assert_eq!(std::fs::read(m.path().join("d/b")).unwrap(), b"x");
        assert!(!m.path().join("e").exists());
    }

    #[test]
    fn an_injected_fsync_failure_is_eio() {
        let (_dir, m) = fresh();
        let mut file = std::fs::File::create(m.path().join("f")).unwrap();
        file.write_all(b"data").unwrap();
        m.fail_next_fsync();
        assert_eq!(
            file.sync_data().unwrap_err().raw_os_error(),
            Some(libc::EIO)
        );
        file.sync_data().unwrap();
        assert_eq!(m.stats().failed_fsyncs, 1);
    }

    #[test]
    fn shared_writable_mmap_is_refused() {
        let (_dir, m) = fresh();
        let path = m.path().join("f");
        std::fs::write(&path, [0u8; 4096]).unwrap();
        let script = "import mmap, sys\n\
            f = open(sys.argv[1], 'r+b')\n\
            try:\n    mmap.mmap(f.fileno(), 4096, mmap.MAP_SHARED, mmap.PROT_WRITE)\n\
            except OSError:\n    sys.exit(3)\n\
            sys.exit(0)\n";
        let status = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(&path)
            .status()
            .unwrap();
        assert_eq!(
            status.code(),
            Some(3),
            "a shared writable mapping was allowed"
        );
    }
}

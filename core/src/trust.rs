//! Files vcoord takes orders from (its configuration, plugin libraries) must be ones only root
//! or vcoord's own user could have written: whoever can write them runs code as vcoord. The
//! checks `sshd` makes of its keys: the file and every directory above it owned by root or this
//! user, and none of them writable by group or others (a sticky directory such as `/tmp` is
//! allowed: others cannot replace what is in it).

use std::collections::BTreeSet;
use std::fs::Metadata;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Linux's `O_NONBLOCK`: without it, opening a FIFO waits for a writer.
const O_NONBLOCK: i32 = 0o4000;

/// Largest configuration vcoord reads, bytes.
pub const CONFIG_MAX_BYTES: u64 = 4 << 20;

/// Why a file was not read.
#[derive(Debug)]
pub enum ReadRefusal {
    /// It could not be opened or read, or is not a regular file of at most the size allowed.
    Io(io::Error),
    /// Others could have written it (see [`check_trusted`]).
    Untrusted(String),
}

/// The text of the regular file at `path`, of at most `max_bytes`; when `trusted` is asked,
/// the file as opened (not the path looked up again) and every directory its name was looked
/// up in must pass [`check_trusted`]'s checks. A FIFO, a device or a directory is refused
/// without waiting on it.
pub fn read_regular(path: &Path, max_bytes: u64, trusted: bool) -> Result<String, ReadRefusal> {
    let bytes = read_regular_bytes(path, max_bytes, trusted)?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        ReadRefusal::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("line {line}: not UTF-8 text (byte {at})"),
        ))
    })
}

/// The bytes of the regular file at `path`, as [`read_regular`] reads it.
pub fn read_regular_bytes(
    path: &Path,
    max_bytes: u64,
    trusted: bool,
) -> Result<Vec<u8>, ReadRefusal> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)
        .map_err(ReadRefusal::Io)?;
    let meta = file.metadata().map_err(ReadRefusal::Io)?;
    let kind = meta.file_type();
    let what = if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_char_device() || kind.is_block_device() {
        Some("a device")
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        None
    };
    if let Some(what) = what {
        return Err(ReadRefusal::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what}, not a regular file (only regular files are read)"),
        )));
    }
    let too_large = || {
        ReadRefusal::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {} MiB, the most that is read", max_bytes >> 20),
        ))
    };
    if meta.len() > max_bytes {
        return Err(too_large());
    }
    if trusted {
        check_opened(path, &meta).map_err(ReadRefusal::Untrusted)?;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadRefusal::Io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large());
    }
    Ok(bytes)
}

/// [`check_trusted`]'s checks of an opened file: `opened` is its metadata, the file the path
/// resolves to now must be it, and each directory a name of the path was looked up in (those
/// holding a symlink on the way included) must be trusted as well.
fn check_opened(path: &Path, opened: &Metadata) -> Result<(), String> {
    let me = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    let full = path
        .canonicalize()
        .map_err(|e| format!("cannot resolve: {e}"))?;
    let now = std::fs::metadata(&full).map_err(|e| format!("cannot stat: {e}"))?;
    if (now.dev(), now.ino()) != (opened.dev(), opened.ino()) {
        return Err("the file changed while it was being opened".into());
    }
    check_one(&full, opened, me, "file")?;
    let written = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("cannot resolve: {e}"))?
            .join(path)
    };
    // Every directory a name was looked up in: those above the file, and those of each prefix
    // of the path as written (where a symlink may sit).
    let mut dirs: BTreeSet<PathBuf> = full.ancestors().skip(1).map(Path::to_path_buf).collect();
    let mut prefix = PathBuf::new();
    for part in written.components() {
        if let Some(dir) = prefix
            .canonicalize()
            .ok()
            .filter(|_| matches!(part, Component::Normal(_)))
        {
            dirs.extend(dir.ancestors().map(Path::to_path_buf));
        }
        prefix.push(part);
    }
    for dir in dirs.iter().rev() {
        let meta = std::fs::metadata(dir)
            .map_err(|e| format!("cannot stat directory {}: {e}", dir.display()))?;
        check_one(dir, &meta, me, "directory")?;
    }
    Ok(())
}

/// Why `path` cannot be trusted, with how to fix it; `Ok` when it can: the file and every
/// directory its name is looked up in.
pub fn check_trusted(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    check_opened(path, &meta)
}

fn check_one(path: &Path, meta: &Metadata, me: u32, what: &str) -> Result<(), String> {
    let mode = meta.permissions().mode();
    let sticky_dir = meta.is_dir() && mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky_dir {
        return Err(format!(
            "{what} {} is group- or world-writable (mode {:o}; fix: chmod go-w {})",
            path.display(),
            mode & 0o7777,
            path.display()
        ));
    }
    if meta.uid() != 0 && meta.uid() != me {
        return Err(format!(
            "{what} {} is owned by uid {}, not root or this user (uid {me}; fix: chown {me} {})",
            path.display(),
            meta.uid(),
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_files_and_directories_are_refused() {
        let dir = std::env::temp_dir().join(format!("vcoord-trust-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        check_trusted(&file).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let why = check_trusted(&file).unwrap_err();
        assert!(
            why.contains("world-writable (mode 666; fix: chmod go-w"),
            "{why}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let why = check_trusted(&file).unwrap_err();
        assert!(
            why.starts_with("directory ") && why.contains("mode 777"),
            "{why}"
        );
        // Sticky, as /tmp is: allowed.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        check_trusted(&file).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A FIFO, a device and a file past the cap are refused at once, never waited on.
    #[test]
    fn only_regular_files_of_bounded_size_are_read() {
        let dir = std::env::temp_dir().join(format!("vcoord-read-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let fifo = dir.join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let refused = |p: &Path, cap| match read_regular(p, cap, false) {
            Err(ReadRefusal::Io(e)) => e.to_string(),
            other => panic!("{}: {other:?}", p.display()),
        };
        assert!(refused(&fifo, 100).contains("a FIFO, not a regular file"));
        assert!(refused(Path::new("/dev/zero"), 100).contains("a device"));
        assert!(refused(&dir, 100).contains("a directory"));
        let big = dir.join("big");
        std::fs::write(&big, vec![b'#'; 3 << 20]).unwrap();
        assert!(refused(&big, 2 << 20).contains("larger than 2 MiB"));
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_regular(&big, 4 << 20, true).unwrap().len(), 3 << 20);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A trusted file named through a symlink in a directory others can write is not trusted:
    /// whoever writes that directory chooses what the name opens.
    #[test]
    fn a_symlink_in_a_writable_directory_is_refused() {
        let dir = std::env::temp_dir().join(format!("vcoord-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("safe")).unwrap();
        std::fs::create_dir_all(dir.join("open")).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.join("safe"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.join("safe/c.toml");
        std::fs::write(&file, "x = 1\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.join("open/c.toml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        std::fs::set_permissions(dir.join("open"), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(read_regular(&file, 1 << 20, true).unwrap(), "x = 1\n");
        match read_regular(&link, 1 << 20, true) {
            Err(ReadRefusal::Untrusted(why)) => {
                assert!(why.contains("open is group- or world-writable"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

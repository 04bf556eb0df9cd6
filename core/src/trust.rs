//! Files vcoord takes orders from (its configuration, plugin libraries) must be ones only root
//! or vcoord's own user could have written: whoever can write them runs code as vcoord. The
//! checks `sshd` makes of its keys: the file and every directory above it owned by root or this
//! user, and none of them writable by group or others (a sticky directory such as `/tmp` is
//! allowed: others cannot replace what is in it).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Why `path` cannot be trusted, with how to fix it; `Ok` when it can.
pub fn check_trusted(path: &Path) -> Result<(), String> {
    let me = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    let full = path
        .canonicalize()
        .map_err(|e| format!("cannot resolve: {e}"))?;
    let meta = std::fs::metadata(&full).map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    check_one(&full, &meta, me, "file")?;
    for dir in full.ancestors().skip(1) {
        let meta = std::fs::metadata(dir)
            .map_err(|e| format!("cannot stat directory {}: {e}", dir.display()))?;
        check_one(dir, &meta, me, "directory")?;
    }
    Ok(())
}

fn check_one(path: &Path, meta: &std::fs::Metadata, me: u32, what: &str) -> Result<(), String> {
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
}

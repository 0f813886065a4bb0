//! Writing into the target directory: a zip (from S3) or a mounted directory (a ConfigMap).
//!
//! The zip is tenant-controlled. Every entry name is checked before anything is written
//! ([`EntryPath`]), declared sizes are checked against the budget first and real bytes charged
//! as they are read, writes never follow a symlink (an earlier source's links are refused as
//! parents and replaced, not written through), and an archive's own symlinks are made last
//! and resolved on disk: one that leads outside the target is removed and refused.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Cursor, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zip::ZipArchive;

use super::Problem;
use super::entry::{Budget, EntryPath, PathProblem, file_mode, is_executable};

/// Longest symlink target read from an archive.
const MAX_LINK_TARGET: u64 = 4096;

/// What one source wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    pub files: usize,
    pub bytes: u64,
}

enum Planned {
    Directory,
    File { executable: bool },
    Link { target: String },
}

/// Unpacks a zip held in memory into `root`.
pub fn unzip(
    zip: &[u8],
    root: &Path,
    max_entries: usize,
    budget: &mut Budget,
) -> Result<Unpacked, Problem> {
    let mut archive =
        ZipArchive::new(Cursor::new(zip)).map_err(|error| Problem::NotAZip(error.to_string()))?;
    if archive.len() > max_entries {
        return Err(Problem::TooManyEntries {
            count: archive.len(),
            limit: max_entries,
        });
    }

    let mut plan = Vec::with_capacity(archive.len());
    let mut declared = Vec::with_capacity(archive.len());
    for index in 0..archive.len() {
        let entry = archive
            .by_index_raw(index)
            .map_err(|error| Problem::NotAZip(error.to_string()))?;
        let name = entry
            .name()
            .map_err(|error| Problem::NotAZip(error.to_string()))?
            .into_owned();
        let path = match EntryPath::parse(&name) {
            Ok(path) => path,
            // `./` and the like: the target itself, already there.
            Err(PathProblem::Empty) if entry.is_dir() => continue,
            Err(problem) => return Err(refused(&name, problem, root)),
        };
        if entry.encrypted() {
            return Err(Problem::Encrypted { entry: name });
        }
        let kind = if entry.is_dir() {
            Planned::Directory
        } else if entry.is_symlink() {
            Planned::Link {
                target: String::new(),
            }
        } else {
            declared.push(entry.size());
            Planned::File {
                executable: is_executable(&path, entry.unix_mode(), false),
            }
        };
        plan.push((index, name, path, kind));
    }
    if !budget.fits(declared) {
        return Err(Problem::TooBig {
            limit: budget.limit(),
        });
    }
    for (index, name, path, kind) in &mut plan {
        if let Planned::Link { target } = kind {
            *target = read_link_target(&mut archive, *index, name)?;
            if !path.link_stays_inside(target) {
                return Err(link_escapes(name, target, root));
            }
        }
    }

    let mut unpacked = Unpacked::default();
    for (index, name, path, kind) in &plan {
        match kind {
            Planned::Directory => {
                let mut dir = root.to_path_buf();
                for part in path.components() {
                    dir.push(part);
                    ensure_directory(&dir, name)?;
                }
            }
            Planned::File { executable } => {
                let mut entry = archive
                    .by_index(*index)
                    .map_err(|error| entry_unreadable(name, error))?;
                unpacked.bytes += write_file(root, path, name, &mut entry, *executable, budget)?;
                unpacked.files += 1;
            }
            Planned::Link { .. } => {}
        }
    }
    // Last, so no entry of this archive is written through one of its links.
    for (_, name, path, kind) in &plan {
        if let Planned::Link { target } = kind {
            make_link(root, path, name, target)?;
            unpacked.files += 1;
        }
    }
    Ok(unpacked)
}

/// Copies the files of a mounted directory into `root`. A ConfigMap volume holds its keys in
/// `..data/` (a link to a timestamped directory) with a link per key beside it: only what is
/// under `..data` is read, and names starting with `..` are skipped.
pub fn copy_directory(
    source: &Path,
    executable: &[String],
    root: &Path,
    budget: &mut Budget,
) -> Result<Unpacked, Problem> {
    let data = source.join("..data");
    let base = if data.is_dir() { data } else { source.to_path_buf() };
    let base = fs::canonicalize(&base).map_err(|error| Problem::io("reading", &base, error))?;
    let mut unpacked = Unpacked::default();
    let mut pending = vec![(base.clone(), String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        let mut entries = fs::read_dir(&dir)
            .map_err(|error| Problem::io("reading", &dir, error))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| Problem::io("reading", &dir, error))?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                return Err(Problem::BadName {
                    entry: entry.path().display().to_string(),
                });
            };
            if file_name.starts_with("..") {
                continue;
            }
            let name = format!("{prefix}{file_name}");
            let from = entry.path();
            // Links (ConfigMap items, or a plain directory's own) are followed only within
            // the source.
            let resolved =
                fs::canonicalize(&from).map_err(|error| Problem::io("reading", &from, error))?;
            if !resolved.starts_with(&base) {
                return Err(Problem::SourceLinkEscapes {
                    entry: name,
                    source_dir: source.display().to_string(),
                });
            }
            let metadata =
                fs::metadata(&resolved).map_err(|error| Problem::io("reading", &from, error))?;
            if metadata.is_dir() {
                pending.push((resolved, format!("{name}/")));
                continue;
            }
            let path = EntryPath::parse(&name).map_err(|problem| refused(&name, problem, root))?;
            let marked = executable.iter().any(|wanted| *wanted == name);
            let executable = is_executable(&path, Some(metadata.permissions().mode()), marked);
            let mut file =
                File::open(&resolved).map_err(|error| Problem::io("reading", &from, error))?;
            unpacked.bytes += write_file(root, &path, &name, &mut file, executable, budget)?;
            unpacked.files += 1;
        }
    }
    Ok(unpacked)
}

fn refused(name: &str, problem: PathProblem, root: &Path) -> Problem {
    match problem {
        PathProblem::Escapes => Problem::Escapes {
            entry: name.to_string(),
            root: root.display().to_string(),
        },
        PathProblem::Empty | PathProblem::Nul => Problem::BadName {
            entry: name.to_string(),
        },
    }
}

fn link_escapes(name: &str, target: &str, root: &Path) -> Problem {
    Problem::LinkEscapes {
        entry: name.to_string(),
        target: target.to_string(),
        root: root.display().to_string(),
    }
}

fn entry_unreadable(name: &str, error: impl std::fmt::Display) -> Problem {
    Problem::EntryUnreadable {
        entry: name.to_string(),
        reason: error.to_string(),
    }
}

fn read_link_target(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    index: usize,
    name: &str,
) -> Result<String, Problem> {
    let entry = archive
        .by_index(index)
        .map_err(|error| entry_unreadable(name, error))?;
    let mut target = Vec::new();
    entry
        .take(MAX_LINK_TARGET + 1)
        .read_to_end(&mut target)
        .map_err(|error| entry_unreadable(name, error))?;
    if target.len() as u64 > MAX_LINK_TARGET {
        return Err(entry_unreadable(name, "symlink target longer than 4096 bytes"));
    }
    String::from_utf8(target).map_err(|_| entry_unreadable(name, "symlink target is not UTF-8"))
}

/// Makes `dir` a directory unless it is one; never through or over a symlink or a file.
fn ensure_directory(dir: &Path, entry: &str) -> Result<(), Problem> {
    match fs::symlink_metadata(dir) {
        Ok(metadata) if metadata.is_dir() => Ok(()),
        Ok(metadata) if metadata.file_type().is_symlink() => Err(Problem::ThroughLink {
            entry: entry.to_string(),
            link: dir.display().to_string(),
        }),
        Ok(_) => Err(Problem::NotADirectory {
            entry: entry.to_string(),
            file: dir.display().to_string(),
        }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            fs::create_dir(dir).map_err(|error| Problem::io("creating", dir, error))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                .map_err(|error| Problem::io("creating", dir, error))
        }
        Err(error) => Err(Problem::io("creating", dir, error)),
    }
}

/// The parent directories of `path` made, and the path to write; an earlier file or link
/// there is removed (later sources win), never followed.
fn prepare(root: &Path, path: &EntryPath, entry: &str) -> Result<PathBuf, Problem> {
    let (file_name, parents) = path
        .components()
        .split_last()
        .expect("an EntryPath has a component");
    let mut full = root.to_path_buf();
    for part in parents {
        full.push(part);
        ensure_directory(&full, entry)?;
    }
    full.push(file_name);
    match fs::symlink_metadata(&full) {
        Ok(metadata) if metadata.is_dir() => Err(Problem::IsADirectory {
            entry: entry.to_string(),
        }),
        Ok(_) => fs::remove_file(&full)
            .map(|()| full.clone())
            .map_err(|error| Problem::io("replacing", &full, error)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(full),
        Err(error) => Err(Problem::io("writing", &full, error)),
    }
}

fn write_file(
    root: &Path,
    path: &EntryPath,
    name: &str,
    content: &mut impl Read,
    executable: bool,
    budget: &mut Budget,
) -> Result<u64, Problem> {
    let full = prepare(root, path, name)?;
    let mode = file_mode(executable);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&full)
        .map_err(|error| Problem::io("writing", &full, error))?;
    let mut written = 0u64;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match content.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(entry_unreadable(name, error)),
        };
        budget.charge(read as u64).map_err(|over| Problem::TooBig { limit: over.limit })?;
        file.write_all(&buffer[..read])
            .map_err(|error| Problem::io("writing", &full, error))?;
        written += read as u64;
    }
    // The umask may have taken bits from the mode asked at creation.
    fs::set_permissions(&full, fs::Permissions::from_mode(mode))
        .map_err(|error| Problem::io("writing", &full, error))?;
    Ok(written)
}

fn make_link(root: &Path, path: &EntryPath, name: &str, target: &str) -> Result<(), Problem> {
    let full = prepare(root, path, name)?;
    std::os::unix::fs::symlink(target, &full)
        .map_err(|error| Problem::io("linking", &full, error))?;
    let root_resolved =
        fs::canonicalize(root).map_err(|error| Problem::io("reading", root, error))?;
    let inside = fs::canonicalize(&full).is_ok_and(|resolved| resolved.starts_with(&root_resolved));
    if !inside {
        // Through other links it leads out, or to nothing (which a later link could redirect).
        let _ = fs::remove_file(&full);
        return Err(link_escapes(name, target, root));
    }
    Ok(())
}

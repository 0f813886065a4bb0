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
    let base = if data.is_dir() {
        data
    } else {
        source.to_path_buf()
    };
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
            let marked = executable.contains(&name);
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
        return Err(entry_unreadable(
            name,
            "symlink target longer than 4096 bytes",
        ));
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
        budget
            .charge(read as u64)
            .map_err(|over| Problem::TooBig { limit: over.limit })?;
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

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use zip::write::SimpleFileOptions;

    use super::*;

    /// A directory removed when the test ends.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "fargo-fetch-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&path).unwrap();
            Scratch(path)
        }

        fn dir(&self, name: &str) -> PathBuf {
            let dir = self.0.join(name);
            fs::create_dir_all(&dir).unwrap();
            dir
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    enum Item<'a> {
        File(&'a str, &'a [u8], u32),
        Dir(&'a str),
        Link(&'a str, &'a str),
    }

    fn zip(items: &[Item]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for item in items {
            match item {
                Item::File(name, content, mode) => {
                    let options = SimpleFileOptions::default()
                        .compression_method(zip::CompressionMethod::Deflated)
                        .unix_permissions(*mode);
                    writer.start_file(*name, options).unwrap();
                    writer.write_all(content).unwrap();
                }
                Item::Dir(name) => writer
                    .add_directory(*name, SimpleFileOptions::default())
                    .unwrap(),
                Item::Link(name, target) => writer
                    .add_symlink(*name, *target, SimpleFileOptions::default())
                    .unwrap(),
            }
        }
        writer.finish().unwrap().into_inner()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn files_under(dir: &Path) -> Vec<String> {
        let mut found = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(dir).unwrap() {
                let entry = entry.unwrap();
                found.push(entry.path().display().to_string());
                if entry.file_type().unwrap().is_dir() {
                    pending.push(entry.path());
                }
            }
        }
        found.sort();
        found
    }

    #[test]
    fn unpacks_nested_files_with_only_the_execute_bit_kept() {
        let scratch = Scratch::new();
        let task = scratch.dir("task");
        let archive = zip(&[
            Item::File("bootstrap", b"#!/bin/sh\n", 0o644),
            Item::Dir("lib/"),
            Item::File("lib/util.py", b"x = 1\n", 0o4755),
            Item::File("lib/deep/data.json", b"{}", 0o2666),
            Item::File("./handler.py", b"def handler(): pass\n", 0o600),
        ]);
        let mut budget = Budget::new(1 << 20);
        let unpacked = unzip(&archive, &task, 100, &mut budget).unwrap();
        assert_eq!(unpacked.files, 4);
        assert_eq!(fs::read(task.join("lib/util.py")).unwrap(), b"x = 1\n");
        assert_eq!(mode(&task.join("bootstrap")), 0o755);
        assert_eq!(mode(&task.join("lib/util.py")), 0o755);
        assert_eq!(mode(&task.join("lib/deep/data.json")), 0o644);
        assert_eq!(mode(&task.join("handler.py")), 0o644);
        assert_eq!(mode(&task.join("lib/deep")), 0o755);
        assert_eq!(budget.left(), (1 << 20) - unpacked.bytes);
    }

    #[test]
    fn refuses_zip_slip_before_writing_anything() {
        let scratch = Scratch::new();
        let task = scratch.dir("task");
        for name in ["../../etc/passwd", "/etc/passwd", "lib/../../x", "..\\x"] {
            let archive = zip(&[
                Item::File("index.js", b"ok", 0o644),
                Item::File(name, b"owned", 0o644),
            ]);
            let error = unzip(&archive, &task, 100, &mut Budget::new(1 << 20)).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("entry {name} escapes {}", task.display())
            );
        }
        assert!(
            files_under(&scratch.0)
                .iter()
                .all(|path| path.ends_with("task"))
        );
    }

    #[test]
    fn keeps_links_inside_the_target_and_refuses_the_rest() {
        let scratch = Scratch::new();
        let task = scratch.dir("task");
        let archive = zip(&[
            Item::File("node_modules/typescript/bin/tsc", b"tsc", 0o755),
            Item::Link("node_modules/.bin/tsc", "../typescript/bin/tsc"),
        ]);
        unzip(&archive, &task, 100, &mut Budget::new(1 << 20)).unwrap();
        assert_eq!(
            fs::read(task.join("node_modules/.bin/tsc")).unwrap(),
            b"tsc"
        );

        let outside = zip(&[Item::Link("passwd", "../../../etc/passwd")]);
        let error = unzip(&outside, &task, 100, &mut Budget::new(1 << 20)).unwrap_err();
        assert!(matches!(error, Problem::LinkEscapes { .. }), "{error}");
        assert!(!task.join("passwd").exists());
    }

    #[test]
    fn refuses_a_link_that_escapes_only_through_another_link() {
        let scratch = Scratch::new();
        let task = scratch.dir("task");
        // By name, `d/../outside` stays in; on disk `here` is the target itself, so `here/..`
        // is its parent.
        let archive = zip(&[Item::Link("here", "."), Item::Link("d", "here/../outside")]);
        fs::write(scratch.0.join("outside"), b"secret").unwrap();
        let error = unzip(&archive, &task, 100, &mut Budget::new(1 << 20)).unwrap_err();
        assert!(matches!(error, Problem::LinkEscapes { .. }), "{error}");
        assert!(fs::symlink_metadata(task.join("d")).is_err());
    }

    #[test]
    fn never_writes_through_a_link_left_by_an_earlier_source() {
        let scratch = Scratch::new();
        let task = scratch.dir("task");
        let elsewhere = scratch.dir("elsewhere");
        std::os::unix::fs::symlink(&elsewhere, task.join("lib")).unwrap();
        let archive = zip(&[Item::File("lib/x.py", b"x", 0o644)]);
        let error = unzip(&archive, &task, 100, &mut Budget::new(1 << 20)).unwrap_err();
        assert!(matches!(error, Problem::ThroughLink { .. }), "{error}");
        assert!(files_under(&elsewhere).is_empty());

        // A link in the place of a file is replaced, not followed.
        fs::write(elsewhere.join("victim"), b"keep").unwrap();
        std::os::unix::fs::symlink(elsewhere.join("victim"), task.join("index.js")).unwrap();
        let archive = zip(&[Item::File("index.js", b"new", 0o644)]);
        unzip(&archive, &task, 100, &mut Budget::new(1 << 20)).unwrap();
        assert_eq!(fs::read(elsewhere.join("victim")).unwrap(), b"keep");
        assert_eq!(fs::read(task.join("index.js")).unwrap(), b"new");
    }

    #[test]
    fn refuses_an_archive_that_unpacks_past_the_budget() {
        let scratch = Scratch::new();
        let task = scratch.dir("task");
        // Compresses to a few hundred bytes: the zip bomb shape.
        let zeros = vec![0u8; 1 << 20];
        let archive = zip(&[Item::File("zeros", &zeros, 0o644)]);
        assert!(archive.len() < 10_000);
        let error = unzip(&archive, &task, 100, &mut Budget::new(1000)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "code and layers unpack to more than --max-unpacked-bytes (1000 bytes, Lambda's 250 MiB)"
        );
        assert!(!task.join("zeros").exists());
    }

    #[test]
    fn charges_real_bytes_across_sources() {
        let scratch = Scratch::new();
        let task = scratch.dir("task");
        let mut budget = Budget::new(10);
        let archive = zip(&[Item::File("a", b"123456", 0o644)]);
        unzip(&archive, &task, 100, &mut budget).unwrap();
        let archive = zip(&[Item::File("b", b"123456", 0o644)]);
        assert!(matches!(
            unzip(&archive, &task, 100, &mut budget),
            Err(Problem::TooBig { limit: 10 })
        ));
    }

    #[test]
    fn refuses_too_many_entries_and_what_is_not_a_zip() {
        let scratch = Scratch::new();
        let task = scratch.dir("task");
        let archive = zip(&[
            Item::File("a", b"", 0o644),
            Item::File("b", b"", 0o644),
            Item::File("c", b"", 0o644),
        ]);
        let error = unzip(&archive, &task, 2, &mut Budget::new(100)).unwrap_err();
        assert!(matches!(
            error,
            Problem::TooManyEntries { count: 3, limit: 2 }
        ));
        let error = unzip(b"PK not really", &task, 2, &mut Budget::new(100)).unwrap_err();
        assert!(
            error.to_string().starts_with("not a readable zip archive"),
            "{error}"
        );
    }

    #[test]
    fn later_sources_replace_files_but_not_directories() {
        let scratch = Scratch::new();
        let task = scratch.dir("task");
        let mut budget = Budget::new(1 << 20);
        unzip(
            &zip(&[Item::File("lib/a", b"1", 0o644)]),
            &task,
            10,
            &mut budget,
        )
        .unwrap();
        unzip(
            &zip(&[Item::File("lib/a", b"2", 0o755)]),
            &task,
            10,
            &mut budget,
        )
        .unwrap();
        assert_eq!(fs::read(task.join("lib/a")).unwrap(), b"2");
        assert_eq!(mode(&task.join("lib/a")), 0o755);
        let error = unzip(
            &zip(&[Item::File("lib", b"3", 0o644)]),
            &task,
            10,
            &mut budget,
        )
        .unwrap_err();
        assert!(matches!(error, Problem::IsADirectory { .. }), "{error}");
    }

    #[test]
    fn copies_the_keys_of_a_mounted_configmap_not_its_machinery() {
        let scratch = Scratch::new();
        let task = scratch.dir("task");
        // The layout the kubelet makes: keys in a timestamped directory behind `..data`.
        let mount = scratch.dir("mount");
        let stamped = scratch.dir("mount/..2026_01_01_00_00_00.1");
        fs::write(stamped.join("handler.py"), b"def handler(): pass\n").unwrap();
        fs::write(stamped.join("bootstrap"), b"#!/bin/sh\n").unwrap();
        fs::write(stamped.join("run.sh"), b"#!/bin/sh\n").unwrap();
        fs::create_dir(stamped.join("lib")).unwrap();
        fs::write(stamped.join("lib/util.py"), b"x = 1\n").unwrap();
        std::os::unix::fs::symlink("..2026_01_01_00_00_00.1", mount.join("..data")).unwrap();
        for key in ["handler.py", "bootstrap", "run.sh", "lib"] {
            std::os::unix::fs::symlink(format!("..data/{key}"), mount.join(key)).unwrap();
        }
        let executable = ["run.sh".to_string()];
        let copied = copy_directory(&mount, &executable, &task, &mut Budget::new(1 << 20)).unwrap();
        assert_eq!(copied.files, 4);
        let task_files = files_under(&task);
        let relative: Vec<_> = task_files
            .iter()
            .map(|path| path.strip_prefix(&task.display().to_string()).unwrap())
            .collect();
        assert_eq!(
            relative,
            [
                "/bootstrap",
                "/handler.py",
                "/lib",
                "/lib/util.py",
                "/run.sh"
            ]
        );
        assert_eq!(mode(&task.join("bootstrap")), 0o755);
        assert_eq!(mode(&task.join("run.sh")), 0o755);
        assert_eq!(mode(&task.join("handler.py")), 0o644);
        assert!(
            !fs::symlink_metadata(task.join("lib"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn refuses_a_plain_directory_link_that_leads_out_of_it() {
        let scratch = Scratch::new();
        let task = scratch.dir("task");
        let source = scratch.dir("source");
        fs::write(scratch.0.join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink("../secret", source.join("secret")).unwrap();
        let error = copy_directory(&source, &[], &task, &mut Budget::new(100)).unwrap_err();
        assert!(
            matches!(error, Problem::SourceLinkEscapes { .. }),
            "{error}"
        );
    }
}

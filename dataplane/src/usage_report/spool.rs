//! Sealed reports on disk until the control plane acknowledges them.
//!
//! Each report is one file, `<incarnation hex>-<sequence>.usage`, holding the encoded
//! `UsageReport`: written to a temporary name, fsync'd, renamed into place and the directory
//! fsync'd, so a file under its final name is always whole, and a report is on disk before it is
//! first sent. The file is removed once the report is acknowledged. At start every file left is
//! loaded back with its original identity (a restart after SIGTERM or SIGKILL, an outage that
//! outlasted the process), so the control plane can recognise one it already committed. A file
//! that cannot be decoded is renamed to `.bad` and reported, never silently dropped.
//!
//! The directory belongs to one data plane, like its configuration cache.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use aurora_proto::v1::UsageReport;
use prost::Message;

const EXTENSION: &str = "usage";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("usage spool {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.display().to_string(), source }
}

/// The spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// Creates the directory (owner-only) if needed.
    pub fn open(dir: &Path) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        }
        Ok(Spool { dir: dir.to_owned() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, incarnation: &[u8], sequence: u64) -> PathBuf {
        self.dir.join(format!("{}-{sequence:020}.{EXTENSION}", hex::encode(incarnation)))
    }

    /// Makes `report` durable. Blocking: call it on the blocking pool.
    pub fn write(&self, report: &UsageReport) -> Result<(), SpoolError> {
        let path = self.path(&report.incarnation, report.sequence);
        let temporary = path.with_extension("tmp");
        let mut file =
            OpenOptions::new().write(true).create(true).truncate(true).open(&temporary).map_err(io(&temporary))?;
        file.write_all(&report.encode_to_vec()).map_err(io(&temporary))?;
        file.sync_all().map_err(io(&temporary))?;
        drop(file);
        fs::rename(&temporary, &path).map_err(io(&path))?;
        File::open(&self.dir).and_then(|dir| dir.sync_all()).map_err(io(&self.dir))
    }

    /// Forgets an acknowledged report. Blocking.
    pub fn remove(&self, incarnation: &[u8], sequence: u64) -> Result<(), SpoolError> {
        let path = self.path(incarnation, sequence);
        match fs::remove_file(&path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(err)),
            _ => Ok(()),
        }
    }

    /// Every report left from earlier runs, oldest sequence first within an incarnation.
    /// Blocking.
    pub fn load(&self) -> Result<Vec<UsageReport>, SpoolError> {
        let mut paths = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let path = entry.map_err(io(&self.dir))?.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some(EXTENSION) => paths.push(path),
                // A write that never reached its rename: the report was never sent either
                // (reports are spooled before they are sent), and it was still in memory.
                Some("tmp") => {
                    let _ = fs::remove_file(&path);
                }
                _ => {}
            }
        }
        paths.sort();
        let mut reports = Vec::with_capacity(paths.len());
        for path in paths {
            let bytes = fs::read(&path).map_err(io(&path))?;
            match UsageReport::decode(bytes.as_slice()) {
                Ok(report) if self.path(&report.incarnation, report.sequence) == path => reports.push(report),
                _ => {
                    let bad = path.with_extension("bad");
                    tracing::error!(path = %path.display(), moved_to = %bad.display(), "unreadable usage report in the spool; kept aside, not delivered");
                    fs::rename(&path, &bad).map_err(io(&path))?;
                }
            }
        }
        Ok(reports)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use aurora_proto::v1::UsageRow;

    use super::*;

    fn report(sequence: u64) -> UsageReport {
        UsageReport {
            node_id: "dp".into(),
            incarnation: vec![0xab; 16],
            sequence,
            rows: vec![UsageRow { key_id: "master".into(), requests: sequence, ..UsageRow::default() }],
        }
    }

    #[test]
    fn reports_survive_until_removed_and_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        for sequence in [2, 1, 10] {
            spool.write(&report(sequence)).unwrap();
        }
        spool.remove(&[0xab; 16], 2).unwrap();
        spool.remove(&[0xab; 16], 2).unwrap();
        let again = Spool::open(&dir.path().join("spool")).unwrap();
        let loaded: Vec<u64> = again.load().unwrap().iter().map(|r| r.sequence).collect();
        assert_eq!(loaded, [1, 10]);
        assert_eq!(again.load().unwrap()[1], report(10));
    }

    #[test]
    fn a_damaged_file_is_set_aside_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.write(&report(1)).unwrap();
        let name = format!("{}-{:020}.usage", hex::encode([0xab; 16]), 2);
        fs::write(dir.path().join(&name), b"\xff\xff\xff not protobuf").unwrap();
        fs::write(dir.path().join("half.tmp"), b"x").unwrap();
        let loaded = spool.load().unwrap();
        assert_eq!(loaded.len(), 1);
        assert!(dir.path().join(name.replace(".usage", ".bad")).exists());
        assert!(!dir.path().join("half.tmp").exists());
    }
}

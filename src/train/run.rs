//! The run folder every trainer writes: the resolved config, metrics as JSON Lines, and checkpoints
//! swapped in atomically, so a killed run loses at most the work since its last checkpoint.
//!
//! ```text
//! RUN/config.toml        the resolved config (file + --set overrides)
//! RUN/metrics.jsonl      one JSON object per logged step or eval, each with "step"
//! RUN/checkpoint/        the latest complete checkpoint (model folder + trainer state)
//! RUN/final/             the trained model, written at the end
//! ```

use crate::io::{self, IoError};
use serde::Serialize;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a run folder could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The folder holds a run already.
    #[error("{0} already holds a run (pass --resume to continue it, or choose another folder)")]
    Exists(PathBuf),
    /// `--resume` was given but there is nothing to resume.
    #[error("{0} has no checkpoint to resume from")]
    NothingToResume(PathBuf),
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// An open run folder.
pub struct RunDir {
    /// The folder.
    pub dir: PathBuf,
}

impl RunDir {
    /// Opens `dir` for a new run (it must not hold one) or, with `resume`, for continuing one (it
    /// must have a checkpoint). Writes the resolved config.
    pub fn open(dir: &Path, resume: bool, config_toml: &str) -> Result<RunDir, RunError> {
        let run = RunDir { dir: dir.to_path_buf() };
        let has_run = dir.join("config.toml").exists();
        match (resume, run.checkpoint().is_some()) {
            (true, false) => return Err(RunError::NothingToResume(dir.to_path_buf())),
            (false, _) if has_run => return Err(RunError::Exists(dir.to_path_buf())),
            _ => {}
        }
        fs::create_dir_all(dir).map_err(io::at(dir))?;
        io::write_atomic(&dir.join("config.toml"), config_toml.as_bytes())?;
        Ok(run)
    }

    /// The latest complete checkpoint folder, if any.
    pub fn checkpoint(&self) -> Option<PathBuf> {
        let p = self.dir.join("checkpoint");
        p.join("state.json").exists().then_some(p)
    }

    /// Writes a checkpoint: `write` fills a fresh temporary folder (it must write `state.json` last),
    /// which then replaces the previous checkpoint by renames.
    pub fn save_checkpoint<E: From<IoError>>(
        &self,
        write: impl FnOnce(&Path) -> Result<(), E>,
    ) -> Result<(), E> {
        let tmp = self.dir.join("checkpoint.partial");
        let (cur, old) = (self.dir.join("checkpoint"), self.dir.join("checkpoint.old"));
        for p in [&tmp, &old] {
            if p.exists() {
                fs::remove_dir_all(p).map_err(io::at(p))?;
            }
        }
        fs::create_dir_all(&tmp).map_err(io::at(&tmp))?;
        write(&tmp)?;
        if cur.exists() {
            fs::rename(&cur, &old).map_err(io::at(&cur))?;
        }
        fs::rename(&tmp, &cur).map_err(io::at(&cur))?;
        if old.exists() {
            fs::remove_dir_all(&old).map_err(io::at(&old))?;
        }
        Ok(())
    }

    /// Opens the metrics log. On resume, lines past `resume_step` (logged after the checkpoint the
    /// run continues from) are dropped, so the log reads as one uninterrupted run.
    pub fn metrics(&self, resume_step: Option<usize>) -> Result<MetricsLog, RunError> {
        let path = self.dir.join("metrics.jsonl");
        let keep: String = match (resume_step, fs::read_to_string(&path)) {
            (Some(step), Ok(text)) => text
                .lines()
                .filter(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v["step"].as_u64())
                        .is_some_and(|s| s as usize <= step)
                })
                .map(|l| format!("{l}\n"))
                .collect(),
            _ => String::new(),
        };
        io::write_atomic(&path, keep.as_bytes())?;
        let file = fs::OpenOptions::new().append(true).open(&path).map_err(io::at(&path))?;
        Ok(MetricsLog { path, file })
    }
}

/// Appends one JSON object per line, flushed at once so a killed run keeps what it logged.
pub struct MetricsLog {
    path: PathBuf,
    file: fs::File,
}

impl MetricsLog {
    /// Appends a record.
    pub fn log(&mut self, record: &impl Serialize) -> Result<(), IoError> {
        let mut line = serde_json::to_vec(record).map_err(|cause| IoError::Json {
            path: self.path.clone(),
            line: None,
            cause,
        })?;
        line.push(b'\n');
        self.file.write_all(&line).and_then(|_| self.file.flush()).map_err(io::at(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn new_run_refuses_an_existing_one_and_resume_needs_a_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        assert!(matches!(RunDir::open(&dir, true, ""), Err(RunError::NothingToResume(_))));
        let run = RunDir::open(&dir, false, "lr = 1").unwrap();
        assert!(matches!(RunDir::open(&dir, false, ""), Err(RunError::Exists(_))));
        run.save_checkpoint(|p| io::write_json(&p.join("state.json"), &json!({"step": 3}))).unwrap();
        assert!(RunDir::open(&dir, true, "lr = 1").is_ok());
    }

    #[test]
    fn a_failed_checkpoint_keeps_the_previous_one() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::open(tmp.path(), false, "").unwrap();
        run.save_checkpoint(|p| io::write_json(&p.join("state.json"), &json!({"step": 1}))).unwrap();
        let failed = run.save_checkpoint(|p| {
            io::write_json(&p.join("half.json"), &json!(1))?;
            Err(IoError::Io { path: p.into(), cause: std::io::Error::other("disk full") })
        });
        assert!(failed.is_err());
        let state: serde_json::Value = io::read_json(&run.checkpoint().unwrap().join("state.json")).unwrap();
        assert_eq!(state["step"], 1);
        assert!(!run.checkpoint().unwrap().join("half.json").exists());
    }

    #[test]
    fn resumed_metrics_drop_lines_past_the_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::open(tmp.path(), false, "").unwrap();
        let mut m = run.metrics(None).unwrap();
        for s in 1..=5 {
            m.log(&json!({"step": s, "loss": 1.0})).unwrap();
        }
        drop(m);
        let mut m = run.metrics(Some(3)).unwrap();
        m.log(&json!({"step": 4, "loss": 0.5})).unwrap();
        let text = fs::read_to_string(tmp.path().join("metrics.jsonl")).unwrap();
        let steps: Vec<u64> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, vec![1, 2, 3, 4]);
    }
}

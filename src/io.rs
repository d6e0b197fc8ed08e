//! File helpers shared by every stage: atomic writes and JSON reading with errors that name the file.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// An I/O or format error that names the file (and, for JSON Lines, the line).
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The file could not be read or written.
    // The cause is a field of the message, not the error's `source()`: a chain printed with
    // `{:#}` would repeat it.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// The file is not the JSON we expect.
    #[error("{path}{}: {cause}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line for JSON Lines files.
        line: Option<usize>,
        /// The cause, with serde's field and column.
        cause: serde_json::Error,
    },
}

/// Attaches the path to an `std::io::Error`.
pub fn at(path: &Path) -> impl FnOnce(std::io::Error) -> IoError + '_ {
    move |cause| IoError::Io { path: path.to_path_buf(), cause }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a reader
/// never sees a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(at(path))
}

/// Writes a value as pretty JSON, atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), IoError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|cause| IoError::Json {
        path: path.to_path_buf(),
        line: None,
        cause,
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Writes values as JSON Lines, atomically.
pub fn write_jsonl<T: Serialize>(path: &Path, values: &[T]) -> Result<(), IoError> {
    let mut bytes = Vec::new();
    for v in values {
        serde_json::to_writer(&mut bytes, v).map_err(|cause| IoError::Json {
            path: path.to_path_buf(),
            line: None,
            cause,
        })?;
        bytes.push(b'\n');
    }
    write_atomic(path, &bytes)
}

/// Reads a JSON file.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, IoError> {
    let bytes = fs::read(path).map_err(at(path))?;
    serde_json::from_slice(&bytes).map_err(|cause| IoError::Json {
        path: path.to_path_buf(),
        line: None,
        cause,
    })
}

/// Reads a JSON Lines file, skipping blank lines; an error names the line.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, IoError> {
    let text = fs::read_to_string(path).map_err(at(path))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|cause| IoError::Json {
                path: path.to_path_buf(),
                line: Some(i + 1),
                cause,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_error_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.jsonl");
        fs::write(&p, "{\"a\": 1}\n\n{\"a\": \"two\"}\n").unwrap();
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct A {
            a: u32,
        }
        let err = read_jsonl::<A>(&p).err().unwrap().to_string();
        assert!(err.contains("x.jsonl, line 3"), "{err}");
        assert!(err.contains("invalid type"), "{err}");
        // The command line prints the whole chain: the cause once.
        let chain = format!("{:#}", anyhow::Error::from(read_jsonl::<A>(&p).err().unwrap()));
        assert_eq!(chain.matches("invalid type").count(), 1, "{chain}");
    }

    #[test]
    fn atomic_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.json");
        write_json(&p, &vec![1, 2, 3]).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.json")]);
        assert_eq!(read_json::<Vec<u32>>(&p).unwrap(), vec![1, 2, 3]);
    }
}

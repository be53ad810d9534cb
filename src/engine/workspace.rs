//! The workspace: one folder that holds everything lathe stores (see DESIGN.md, Storage).

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct Workspace {
    pub root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot use {path} as the workspace ({source}); pass another folder with --home or LATHE_HOME")]
pub struct WorkspaceError {
    path: PathBuf,
    source: std::io::Error,
}

impl Workspace {
    /// Opens the folder, creating it and its sub-folders when missing.
    pub fn open(root: &Path) -> Result<Workspace, WorkspaceError> {
        let ws = Workspace { root: root.to_path_buf() };
        for dir in [ws.root.clone(), ws.logs_dir(), ws.models_dir(), ws.runs_dir(), ws.vectors_dir()] {
            std::fs::create_dir_all(&dir)
                .map_err(|source| WorkspaceError { path: dir.clone(), source })?;
        }
        Ok(ws)
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn log_file(&self) -> PathBuf {
        self.logs_dir().join("lathe.log")
    }
    pub fn models_dir(&self) -> PathBuf {
        self.root.join("models")
    }
    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }
    /// Conversations exported from the Chat pane (made when the first is written).
    pub fn chats_dir(&self) -> PathBuf {
        self.root.join("chats")
    }
    pub fn vectors_dir(&self) -> PathBuf {
        self.root.join("vectors")
    }
    pub fn catalog_path(&self) -> PathBuf {
        self.root.join("lathe.duckdb")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_creates_the_layout() {
        let dir = std::env::temp_dir().join(format!("lathe-ws-{}", std::process::id()));
        let ws = Workspace::open(&dir).unwrap();
        for d in [ws.logs_dir(), ws.models_dir(), ws.runs_dir(), ws.vectors_dir()] {
            assert!(d.is_dir(), "{d:?} missing");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unusable_path_says_what_to_do() {
        let file = std::env::temp_dir().join(format!("lathe-ws-file-{}", std::process::id()));
        std::fs::write(&file, b"x").unwrap();
        let err = Workspace::open(&file.join("sub")).unwrap_err().to_string();
        assert!(err.contains("--home"), "{err}");
        std::fs::remove_file(&file).unwrap();
    }
}

//! Models as the service finds and names them: the library listing (the workspace's models/,
//! added paths, the Hugging Face cache, Ollama's store and server), a name resolved to a file,
//! and where a GGUF export goes. The workstation reaches these through `Service` calls on threads
//! of their own; the CLI calls them directly with the catalog it holds.

use std::path::{Path, PathBuf};

use super::ServiceError;
use crate::engine::data::Catalog;
use crate::engine::export::gguf::Quant;
use crate::engine::infer::library::{self, ModelEntry, Roots};
use crate::engine::types::{ModelRef, Remote};
use crate::engine::workspace::Workspace;

/// Every model the library finds. `cat` gives the added paths (None while the catalog opens:
/// they are left out until the next listing).
pub fn list(ws: &Workspace, cat: Option<&Catalog>) -> Vec<ModelEntry> {
    let mut list = local(ws, cat);
    list.extend(library::ollama_server());
    list
}

/// The models on this machine's disks (no server asked).
pub fn local(ws: &Workspace, cat: Option<&Catalog>) -> Vec<ModelEntry> {
    let added = cat.map(|c| c.model_paths().unwrap_or_default()).unwrap_or_default();
    library::scan(&Roots::standard(&ws.models_dir(), added))
}

/// A server spec or a file as it is; any other name looked up in the library (a file in models/,
/// an added path, the Hugging Face cache, the Ollama store by name or name:latest).
pub fn resolve(ws: &Workspace, cat: Option<&Catalog>, name: &str) -> Result<ModelRef, ServiceError> {
    if let Some(found) = direct(name) {
        return found;
    }
    let added = cat.map(|c| c.model_paths().unwrap_or_default()).unwrap_or_default();
    library::resolve_name(&ws.models_dir(), added, name).map(ModelRef::File).map_err(ServiceError::NotFound)
}

/// A name that needs no lookup (so no catalog): a server spec (`ollama:…`, `openai:…`; Err when
/// malformed) or an existing file. None: look it up.
pub fn direct(name: &str) -> Option<Result<ModelRef, ServiceError>> {
    match Remote::parse(name) {
        Some(server) => Some(server.map(ModelRef::Server).map_err(ServiceError::Invalid)),
        None => Path::new(name).is_file().then(|| Ok(ModelRef::File(name.into()))),
    }
}

/// The name a GGUF export gets in the workspace's models/ folder: `NAME-QUANT.gguf` (a
/// Hugging Face `org/name` becomes `org-name`).
pub fn export_path(ws: &Workspace, name: &str, quant: Quant) -> PathBuf {
    ws.models_dir().join(format!("{}-{}.gguf", name.replace('/', "-"), quant.name()))
}

/// The export name of a recorded run.
pub fn run_export_name(id: &str) -> String {
    format!("run-{id}")
}

/// What an export reads: a recorded run or a Hugging Face model folder.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ModelSource {
    Run(String),
    Folder(PathBuf),
}

impl ModelSource {
    /// A folder with a config.json, or else a run id; Err for a path that is not a model folder.
    pub fn parse(source: &str) -> Result<ModelSource, ServiceError> {
        let p = Path::new(source);
        if p.join("config.json").exists() {
            return Ok(ModelSource::Folder(p.to_path_buf()));
        }
        if p.exists() {
            return Err(ServiceError::Invalid(format!("{} is not a Hugging Face model folder (no config.json); give a model folder or a run id.", p.display())));
        }
        Ok(ModelSource::Run(source.to_string()))
    }

    /// The export's name: the folder's, or `run-ID`.
    pub fn name(&self) -> String {
        match self {
            ModelSource::Folder(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into()),
            ModelSource::Run(id) => run_export_name(id),
        }
    }
}

/// Adds a GGUF file, a Hugging Face folder or a folder of models to the library (nothing is
/// copied); returns how many models it holds. A path with none is refused.
pub fn add_path(cat: &Catalog, path: &Path) -> Result<usize, ServiceError> {
    let abs = std::fs::canonicalize(path).map_err(|e| ServiceError::NotFound(format!("Cannot add {} ({e}); check the path.", path.display())))?;
    let found = crate::engine::infer::library::scan(&crate::engine::infer::library::Roots { added: vec![abs.clone()], ..Default::default() });
    if found.is_empty() {
        return Err(ServiceError::Invalid(format!("{} holds no GGUF file or Hugging Face model folder; nothing was added.", abs.display())));
    }
    cat.add_model_path(&abs)?;
    Ok(found.len())
}

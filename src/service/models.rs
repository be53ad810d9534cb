//! Models as the service finds and names them: the library listing (the workspace's models/,
//! added paths, the Hugging Face cache, Ollama's store and server), a name resolved to a file,
//! and where a GGUF export goes. The workstation reaches these through `Service` calls on threads
//! of their own; the CLI calls them directly with the catalog it holds.

use std::path::{Path, PathBuf};

use super::ServiceError;
use crate::engine::data::Catalog;
use crate::engine::export::gguf::Quant;
use crate::engine::infer::library::{self, ModelEntry, Roots};
use crate::engine::workspace::Workspace;

/// Every model the library finds. `cat` gives the added paths (None while the catalog opens:
/// they are left out until the next listing).
pub fn list(ws: &Workspace, cat: Option<&Catalog>) -> Vec<ModelEntry> {
    let added = cat.map(|c| c.model_paths().unwrap_or_default()).unwrap_or_default();
    let mut list = library::scan(&Roots::standard(&ws.models_dir(), added));
    list.extend(library::ollama_server());
    list
}

/// A file or server spec as it is; any other name looked up in the library (a file in models/,
/// an added path, the Hugging Face cache, the Ollama store by name or name:latest).
pub fn resolve(ws: &Workspace, cat: Option<&Catalog>, name: &str) -> Result<PathBuf, ServiceError> {
    if is_direct(name) {
        return Ok(PathBuf::from(name));
    }
    let added = cat.map(|c| c.model_paths().unwrap_or_default()).unwrap_or_default();
    library::resolve_name(&ws.models_dir(), added, name).map_err(ServiceError::NotFound)
}

/// A name that needs no lookup: an existing file, or `ollama:…` / `openai:…`.
pub fn is_direct(name: &str) -> bool {
    Path::new(name).is_file() || crate::engine::infer::remote::parse_spec(name).is_some()
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

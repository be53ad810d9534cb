//! Models as the service finds and names them: the library listing (the workspace's models/,
//! added paths, the Hugging Face cache, Ollama's store and server, the OpenAI-compatible servers
//! the user added), a name resolved to a file or a server's model, and where a GGUF export goes. The workstation reaches these through `Service` calls on threads
//! of their own; the CLI calls them directly with the catalog it holds.

use std::path::{Path, PathBuf};

use super::ServiceError;
use crate::engine::data::runs::RunRow;
use crate::engine::data::views::Split;
use crate::engine::data::Catalog;
use crate::engine::export::gguf::{Provenance, Quant};
use crate::engine::infer::library::{self, ModelEntry, Roots};
use crate::engine::types::{ModelRef, ModelServer, Remote};
use crate::engine::workspace::Workspace;

/// Every model the library finds. `cat` gives the added paths (None while the catalog opens:
/// they are left out until the next listing).
pub fn list(ws: &Workspace, cat: Option<&Catalog>) -> Vec<ModelEntry> {
    let mut list = local(ws, cat);
    list.extend(library::ollama_server());
    if let Some(c) = cat {
        list.extend(library::openai_servers(&c.model_servers().unwrap_or_default()));
    }
    list
}

/// `SERVER/MODEL` of a server the user added: that model (no server is asked). None for any
/// other name.
pub fn server_model(cat: Option<&Catalog>, name: &str) -> Option<ModelRef> {
    let (server, model) = name.split_once('/')?;
    let servers = cat?.model_servers().ok()?;
    let s = servers.iter().find(|s| s.name == server).filter(|_| !model.is_empty())?;
    Some(ModelRef::Server(s.remote(model)))
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
    if let Some(found) = server_model(cat, name) {
        return Ok(found);
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

/// What an export of a run says of itself: the run, its base model's folder name and its view,
/// and the view's first held-out question (none when the view is gone or holds no conversations).
pub fn provenance(cat: &Catalog, run: &RunRow) -> Provenance {
    let example_prompt = cat
        .examples(&run.view, Split::Eval, Some(1))
        .ok()
        .and_then(|ex| ex.iter().find_map(crate::engine::train::text::chat_prompt))
        .and_then(|(messages, _)| messages.into_iter().rev().find(|m| m.role == "user"))
        .map(|m| m.content);
    let base = Path::new(&run.model).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| run.model.clone());
    Provenance { description: format!("Fine-tuned by lathe ({}, run {}) from {base} on the view {}.", run.method, run.id, run.view), example_prompt }
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

/// Adds an OpenAI-compatible server (`base` ends in /v1) under `name` (its host when None), its
/// key read from the environment variable `key_env` whenever it is asked; the server is asked for
/// its models first, and one that does not answer is not added. Returns how many it lists.
pub fn add_server(cat: &Catalog, base: &str, name: Option<&str>, key_env: Option<&str>) -> Result<usize, ServiceError> {
    let base = base.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(ServiceError::Invalid(format!("{base} is not an http:// or https:// address; give the server's base URL, e.g. http://localhost:8080/v1.")));
    }
    let name = name.map(str::to_string).unwrap_or_else(|| ModelServer::default_name(base));
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if name.is_empty() || !name.chars().all(fine) || matches!(name.as_str(), "ollama" | "openai") {
        return Err(ServiceError::Invalid(format!("{name:?} cannot name a server: use letters, digits, '.', '-' or '_' (not ollama or openai); pass --name NAME.")));
    }
    if let Some(var) = key_env {
        if std::env::var(var).is_err() {
            return Err(ServiceError::Invalid(format!("The environment variable {var} is not set here; export it (it holds the server's API key), then add the server again.")));
        }
    }
    let server = ModelServer { name, base: base.into(), key_env: key_env.map(str::to_string) };
    let models = server.remote("").models().map_err(|e| ServiceError::Invalid(format!("{base} did not list its models, so it was not added: {e} (the address ends in /v1; a key is given with --key-env VAR).")))?;
    cat.add_model_server(&server)?;
    Ok(models.len())
}

/// Takes a server (by name) or an added path out of the library; nothing is deleted from disk.
/// Returns what was removed, as the list showed it.
pub fn remove(cat: &Catalog, what: &str) -> Result<String, ServiceError> {
    if cat.remove_model_server(what.trim_end_matches('/'))? {
        return Ok(format!("server {}", what.trim_end_matches('/')));
    }
    let path = std::fs::canonicalize(what).unwrap_or_else(|_| PathBuf::from(what));
    if cat.remove_model_path(&path)? {
        return Ok(path.display().to_string());
    }
    Err(ServiceError::NotFound(format!("{what} is neither a server nor a path added to the library; `lathe models list` shows them (files in the workspace's models/ folder are removed by deleting them).")))
}

//! lathe's API for changing the workspace: a dataset dropped or written to a file, training-set
//! views defined, read and dropped, a file or folder added to the model library, an empty
//! knowledge collection made — what `lathe data`, `lathe models add` and `lathe kb create` do
//! when a server owns the workspace. The owner's token may name any file its user may read or
//! write; other clients only files inside the folders the server allows (`--allow DIR`), never
//! overwrite one, and their SQL (a view's, an export's) is held to the read-only rule of
//! /api/sql: the workspace's own tables, no files.

use std::path::PathBuf;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::workspace::{allowed, field, flag, number, one, started, text};
use super::{blocking, blocking_mut, json_response, read_json, ApiError, AppState};
use crate::engine::data::views::{Split, DEFAULT_EVAL_FRACTION};
use crate::engine::data::ExportSource;
use crate::service::ServiceError;

/// Examples a view answer holds at most.
const EXAMPLES: f64 = 1_000.0;

pub(super) async fn drop_dataset(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let gone = name.clone();
    blocking(&state, move |s| Ok(s.drop_dataset(&name)?)).await?;
    Ok(json_response(StatusCode::OK, &json!({"name": gone, "dropped": true})))
}

/// `{"name", "sql", "format", "eval_fraction"?, "replace"?}` → the view with its split's sizes.
pub(super) async fn create_view(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let owner = super::from_owner(&state, req.headers());
    let body = read_json(req).await?;
    let name = text(&body, "name", "the view's name")?.to_string();
    let sql = text(&body, "sql", "a SELECT over the workspace's datasets")?.to_string();
    let format = text(&body, "format", "chat, alpaca, completion or text")?.to_string();
    let eval_fraction = number(&body, "eval_fraction", DEFAULT_EVAL_FRACTION, (0.0, 0.99))?;
    let replace = flag(&body, "replace")?;
    one(blocking(&state, move |s| {
        if !owner {
            s.check_read_only(&sql)?;
        }
        Ok(s.create_view(&name, &sql, &format, eval_fraction, replace)?)
    })
    .await?)
}

pub(super) async fn drop_view(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let gone = name.clone();
    blocking(&state, move |s| Ok(s.drop_view(&name)?)).await?;
    Ok(json_response(StatusCode::OK, &json!({"name": gone, "dropped": true})))
}

/// `{"split"?: "train"|"eval", "limit"?}` → the view and its examples from that split, as the
/// model is trained on them.
pub(super) async fn examples(State(state): State<AppState>, Path(name): Path<String>, req: Request) -> Result<Response, ApiError> {
    let body = read_json(req).await?;
    let split = match field(&body, "split")?.as_deref() {
        None | Some("train") => Split::Train,
        Some("eval") => Split::Eval,
        Some(_) => return Err(ApiError::invalid("invalid_value", "split must be train or eval.")),
    };
    let limit = number(&body, "limit", 20.0, (1.0, EXAMPLES))? as usize;
    let (view, examples) = blocking(&state, move |s| Ok(s.examples(&name, split, Some(limit))?)).await?;
    one(json!({"view": view, "examples": examples}))
}

/// `{"dataset" | "sql", "path"}`: the dataset or the query's result written to `path` (.csv,
/// .parquet or .jsonl) in a job.
pub(super) async fn export(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let owner = super::from_owner(&state, req.headers());
    let body = read_json(req).await?;
    let path = writable(&state, text(&body, "path", "the absolute path of the file to write")?, owner)?;
    let what = match (field(&body, "dataset")?, field(&body, "sql")?) {
        (Some(name), None) => ExportSource::Dataset(name),
        (None, Some(sql)) => ExportSource::Query(sql),
        _ => return Err(ApiError::invalid("invalid_value", "Give a dataset (its name) or sql (one SELECT), one of them.")),
    };
    let id = blocking_mut(&state, move |s| {
        if let (ExportSource::Query(sql), false) = (&what, owner) {
            s.check_read_only(sql)?;
        }
        Ok(s.start_data_export(what, path)?)
    })
    .await?;
    Ok(started(id))
}

/// `{"path"}`: a GGUF file, a Hugging Face folder or a folder of models added to the library; or
/// `{"url", "name"?, "key_env"?}`: an OpenAI-compatible server, from the owner's token only (a
/// client may not make this server call an address of its choosing).
pub(super) async fn add_model(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let owner = super::from_owner(&state, req.headers());
    let body = read_json(req).await?;
    if body.get("url").is_some_and(|u| !u.is_null()) {
        if !owner {
            return Err(ServiceError::Refused("Only the workspace's owner adds a server to the library (lathe models add URL on this machine).".into()).into());
        }
        let url = text(&body, "url", "the server's base URL, e.g. http://localhost:8080/v1")?.to_string();
        let (name, key_env) = (field(&body, "name")?, field(&body, "key_env")?);
        let shown = url.clone();
        let models = blocking(&state, move |s| Ok(s.add_model_server(&url, name.as_deref(), key_env.as_deref())?)).await?;
        return Ok(json_response(StatusCode::OK, &json!({"path": shown, "models": models})));
    }
    let path = allowed(&state, text(&body, "path", "the absolute path of a model file or folder")?, owner)?;
    let (p, shown) = (PathBuf::from(&path), path.clone());
    let models = blocking(&state, move |s| Ok(s.add_model_path(&p)?)).await?;
    Ok(json_response(StatusCode::OK, &json!({"path": shown, "models": models})))
}

/// `{"name"}`: a server (by name) or an added path taken out of the library (nothing on disk is
/// touched) → what was removed.
pub(super) async fn remove_model(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let body = read_json(req).await?;
    let name = text(&body, "name", "a server's name or an added path, as `lathe models list` shows it")?.to_string();
    let removed = blocking(&state, move |s| Ok(s.remove_model(&name)?)).await?;
    Ok(json_response(StatusCode::OK, &json!({"removed": removed})))
}

/// `{"name", "model"}`: an empty collection for an embedding model (a library name, or a folder
/// the caller may read).
pub(super) async fn create_collection(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let owner = super::from_owner(&state, req.headers());
    let body = read_json(req).await?;
    let name = text(&body, "name", "the collection's name")?.to_string();
    let model = text(&body, "model", "an embedding model's library name or folder")?.to_string();
    let folder = match std::path::Path::new(&model).is_absolute() {
        true => Some(PathBuf::from(allowed(&state, &model, owner)?)),
        false => None,
    };
    one(blocking(&state, move |s| {
        let folder = match folder {
            Some(f) => f,
            None => s.library_embedding_model(&model)?,
        };
        Ok(s.kb_create(&name, &folder)?)
    })
    .await?)
}

/// A file a request may write: an absolute path in an existing folder; for a client without the
/// owner's token, inside an allowed folder and not there yet.
fn writable(state: &AppState, path: &str, owner: bool) -> Result<PathBuf, ApiError> {
    if state.allow.is_empty() && !owner {
        return Err(ServiceError::Refused("This server writes no files for its clients; start it with --allow DIR to let them write into DIR.".into()).into());
    }
    let p = std::path::Path::new(path);
    let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
        return Err(ApiError::invalid("invalid_value", format!("{path:?} must be an absolute path to a file.")));
    };
    if !p.is_absolute() || path.contains(['*', '?', '[']) {
        return Err(ApiError::invalid("invalid_value", format!("{path:?} must be an absolute path to a file (no patterns).")));
    }
    let dir = parent.canonicalize().map_err(|_| ServiceError::NotFound(format!("There is no folder {}; make it first.", parent.display())))?;
    let out = dir.join(name);
    if !owner {
        if !state.allow.iter().any(|a| dir.starts_with(a)) {
            let dirs: Vec<String> = state.allow.iter().map(|a| a.display().to_string()).collect();
            return Err(ServiceError::Refused(format!("{path} is outside the folders this server may write ({}).", dirs.join(", "))).into());
        }
        if out.symlink_metadata().is_ok() {
            return Err(ServiceError::AlreadyExists(format!("{path} exists and this server overwrites nothing for its clients; choose another name.")).into());
        }
    }
    Ok(out)
}

//! `POST /v1/embeddings` in OpenAI's shapes: `input` a string or a list of strings (token arrays
//! are refused with a sentence), `model` an embedding model of the library (or a folder),
//! `encoding_format` `float` (the default) or `base64` (little-endian f32, what the official
//! client asks for by default), `dimensions` only the model's own. The vectors come from the
//! service's embedding call, the one `lathe embed` and the knowledge engine use.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::{blocking, json_response, model_error, read_json, whole, ApiError, AppState};

/// Inputs per request, as OpenAI allows.
const MAX_INPUTS: usize = 2048;

/// The inputs of a request, or why they are refused.
fn inputs(v: &Value) -> Result<Vec<String>, ApiError> {
    let bad = |m: &str| ApiError::invalid("invalid_input", m);
    let list = match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if items.iter().all(Value::is_string) => items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect(),
        Value::Array(items) if items.iter().all(|i| i.is_number() || i.is_array()) => {
            return Err(bad("input is token ids; lathe embeds text: send the texts themselves."))
        }
        Value::Null => return Err(bad("input is required: a string or a list of strings.")),
        _ => return Err(bad("input must be a string or a list of strings.")),
    };
    if list.is_empty() {
        return Err(bad("input is an empty list; send at least one text."));
    }
    if list.len() > MAX_INPUTS {
        return Err(bad(&format!("input has {} texts; send at most {MAX_INPUTS} per request.", list.len())));
    }
    if list.iter().any(|t| t.is_empty()) {
        return Err(bad("input holds an empty string; every text needs at least one character."));
    }
    Ok(list)
}

fn base64_of(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    crate::units::base64(&bytes)
}

pub(super) async fn embeddings(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let body = read_json(req).await?;
    let model = body["model"].as_str().ok_or_else(|| ApiError::invalid("invalid_model", "model is required: the name of an embedding model (GET /v1/models lists them)."))?.to_string();
    let texts = inputs(&body["input"])?;
    let base64 = match body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return Err(ApiError::invalid("invalid_encoding_format", format!("encoding_format {other:?} is neither \"float\" nor \"base64\"."))),
    };
    let dimensions = match body.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(d) => Some(whole(d).filter(|&n| n > 0).ok_or_else(|| ApiError::invalid("invalid_dimensions", "dimensions must be a positive whole number."))? as u64),
    };
    let name = model.clone();
    let done = blocking(&state, move |s| {
        let dir = s.library_embedding_model(&name).map_err(model_error)?;
        Ok(s.embed(&dir, None, &texts)?)
    })
    .await?;
    if let Some(d) = dimensions.filter(|&d| d as usize != done.dimension) {
        return Err(ApiError::invalid("invalid_dimensions", format!("{} gives {} dimensions and cannot give {d}; leave dimensions out.", done.model, done.dimension)));
    }
    let data: Vec<Value> = done
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 { json!(base64_of(v)) } else { json!(v) };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let usage = json!({"prompt_tokens": done.tokens, "total_tokens": done.tokens});
    Ok(json_response(StatusCode::OK, &json!({"object": "list", "data": data, "model": model, "usage": usage})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_texts() {
        assert_eq!(inputs(&json!("a")).unwrap(), ["a"]);
        assert_eq!(inputs(&json!(["a", "b"])).unwrap(), ["a", "b"]);
        for (v, says) in [
            (json!([1, 2, 3]), "token ids"),
            (json!([[1, 2]]), "token ids"),
            (json!([]), "empty list"),
            (json!(["a", ""]), "empty string"),
            (json!(null), "required"),
            (json!({"a": 1}), "a string or a list"),
        ] {
            let e = inputs(&v).unwrap_err();
            assert!(e.message.contains(says) && e.status == StatusCode::BAD_REQUEST, "{v}: {e:?}");
        }
    }

    #[test]
    fn base64_is_little_endian_f32() {
        assert_eq!(base64_of(&[1.0]), "AACAPw==");
    }
}

//! The API's own description: each route's OpenAPI 3.1 operation (request, responses, every error
//! status it can give), put together by `document` from the route table in mod.rs (the table
//! that also builds the router, so a route cannot go undocumented), served at `/openapi.json`;
//! and `/docs`, a page that renders that document in the browser with nothing from the internet.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn body(name: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema(name)}}})
}

/// The error statuses a route gives, each with OpenAI's error body.
fn errors(codes: &[u16]) -> Map<String, Value> {
    let said = |c: u16| match c {
        400 => "The request is malformed or asks for something the model cannot do (the message says which field).",
        401 => "The API key is missing or wrong (the server was started with one).",
        404 => "No such model, or no such route.",
        405 => "The route does not take this method.",
        413 => "The body is over 8 MiB.",
        500 => "The engine failed while answering.",
        503 => "Every slot is busy and the queue is full (Retry-After: 1), the model cannot be loaded, or the server is stopping.",
        _ => "An error.",
    };
    codes
        .iter()
        .map(|&c| (c.to_string(), json!({"description": said(c), "content": {"application/json": {"schema": schema("Error")}}})))
        .collect()
}

fn op(summary: &str, description: &str, request: Option<&str>, ok: Value, codes: &[u16]) -> Value {
    let mut responses = errors(codes);
    responses.insert("200".into(), ok);
    let mut v = json!({"summary": summary, "description": description, "responses": responses});
    if let Some(r) = request {
        v["requestBody"] = body(r);
    }
    v
}

fn ok_json(name: &str, description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema(name)}}})
}

fn ok_stream(whole: &str, chunk: &str) -> Value {
    json!({
        "description": "The answer: whole as JSON, or with `stream: true` as server-sent events, each `data:` a chunk, ending `data: [DONE]`.",
        "content": {"application/json": {"schema": schema(whole)}, "text/event-stream": {"schema": {"type": "string", "description": format!("`data: ` lines, each a {chunk} as JSON, then `data: [DONE]`.")}}}
    })
}

pub fn health() -> Value {
    op("Whether the server can answer", "200 when it can; 503 while a model loads.", None, json!({"description": "Ready.", "content": {"application/json": {"schema": {"type": "object", "properties": {"status": {"type": "string"}}}}}}), &[401, 503])
}

pub fn metrics() -> Value {
    let text = json!({"description": "Prometheus' text format 0.0.4; every name starts lathe_.", "content": {"text/plain": {"schema": {"type": "string"}}}});
    op("Figures for Prometheus", "HTTP requests and durations by route and status, answers running, waiting and refused, tokens and seconds, time to first token, queue wait, jobs by kind and status, models loaded, resident memory.", None, text, &[401])
}

pub fn models() -> Value {
    op("The models a request may name", "The library's GGUF models (for chat and completions) and embedding models (for embeddings), by name.", None, ok_json("ModelList", "The models."), &[401])
}

pub fn chat() -> Value {
    op(
        "Answer a conversation",
        "Rendered with the model's own chat template; several requests are decoded together in one llama.cpp context. A client that disconnects stops its answer.",
        Some("ChatRequest"),
        ok_stream("ChatCompletion", "ChatCompletionChunk"),
        &[400, 401, 404, 413, 500, 503],
    )
}

pub fn completions() -> Value {
    op("Continue a text", "The prompt as it is (special tokens in it are read as such).", Some("CompletionRequest"), ok_stream("Completion", "CompletionChunk"), &[400, 401, 404, 413, 500, 503])
}

pub fn embeddings() -> Value {
    op("Embed texts", "Sentence embeddings from the library's embedding models (the ones the knowledge engine uses).", Some("EmbeddingRequest"), ok_json("EmbeddingList", "One vector per input, in order."), &[400, 401, 404, 413, 500])
}

pub fn openapi_doc() -> Value {
    op("This document", "OpenAPI 3.1, generated from the server's route table.", None, json!({"description": "The document.", "content": {"application/json": {"schema": {"type": "object"}}}}), &[401])
}

pub fn docs_doc() -> Value {
    op("This document as a page", "HTML that renders /openapi.json; it loads nothing from the internet.", None, json!({"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}}), &[401])
}

fn components() -> Value {
    let sampling = json!({
        "max_tokens": {"type": ["integer", "null"], "minimum": 1, "description": "Tokens to generate at most (default: until the model ends or its context is full)."},
        "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2, "description": "0 picks the likeliest token; default 0.8."},
        "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1, "description": "Default 0.95."},
        "seed": {"type": ["integer", "null"], "description": "The same seed and request give the same answer; default random."},
        "stop": {"description": "Up to 16 strings; the answer ends before the first that appears.", "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 16}, {"type": "null"}]},
        "frequency_penalty": {"type": ["number", "null"], "minimum": -2, "maximum": 2},
        "presence_penalty": {"type": ["number", "null"], "minimum": -2, "maximum": 2},
        "n": {"type": ["integer", "null"], "enum": [1, null]},
        "stream": {"type": ["boolean", "null"]},
        "stream_options": {"type": ["object", "null"], "properties": {"include_usage": {"type": "boolean", "description": "A last chunk with no choices and the usage."}}},
        "response_format": {"$ref": "#/components/schemas/ResponseFormat"}
    });
    let with = |extra: Value, required: &[&str]| {
        let mut props = sampling.as_object().cloned().unwrap_or_default();
        props.extend(extra.as_object().cloned().unwrap_or_default());
        json!({"type": "object", "required": required, "properties": props})
    };
    let usage = json!({"type": "object", "required": ["prompt_tokens", "completion_tokens", "total_tokens"], "properties": {"prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}}});
    let finish = json!({"type": ["string", "null"], "enum": ["stop", "length", null]});
    let head = |object: &str| json!({"id": {"type": "string"}, "object": {"const": object}, "created": {"type": "integer"}, "model": {"type": "string"}, "system_fingerprint": {"type": "null"}});
    let obj = |object: &str, extra: Value| {
        let mut props = head(object).as_object().cloned().unwrap_or_default();
        props.extend(extra.as_object().cloned().unwrap_or_default());
        json!({"type": "object", "required": ["id", "object", "created", "model", "choices"], "properties": props})
    };
    json!({"schemas": {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["message", "type", "code"], "properties": {"message": {"type": "string"}, "type": {"type": "string"}, "code": {"type": "string"}, "param": {"type": ["string", "null"]}}}}},
        "Usage": usage,
        "ResponseFormat": {"type": ["object", "null"], "required": ["type"], "properties": {"type": {"enum": ["text", "json_object", "json_schema"]}, "json_schema": {"type": "object", "required": ["schema"], "properties": {"name": {"type": "string"}, "schema": {"type": "object"}, "strict": {"type": "boolean"}}}}, "description": "json_object and json_schema constrain the answer with the grammar llama.cpp's converter makes from the schema, so it parses."},
        "ChatMessage": {"type": "object", "required": ["role"], "properties": {"role": {"enum": ["system", "developer", "user", "assistant"]}, "content": {"oneOf": [{"type": "string"}, {"type": "null"}, {"type": "array", "items": {"type": "object", "required": ["type", "text"], "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}}]}}},
        "ChatRequest": with(json!({"model": {"type": "string", "description": "A GGUF model's name from GET /v1/models."}, "messages": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/ChatMessage"}}, "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1, "description": "Wins over max_tokens."}}), &["model", "messages"]),
        "CompletionRequest": with(json!({"model": {"type": "string"}, "prompt": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 1}]}}), &["model", "prompt"]),
        "ChatCompletion": obj("chat.completion", json!({"usage": {"$ref": "#/components/schemas/Usage"}, "choices": {"type": "array", "items": {"type": "object", "properties": {"index": {"type": "integer"}, "message": {"type": "object", "properties": {"role": {"const": "assistant"}, "content": {"type": "string"}, "refusal": {"type": "null"}}}, "logprobs": {"type": "null"}, "finish_reason": finish}}}})),
        "ChatCompletionChunk": obj("chat.completion.chunk", json!({"usage": {"oneOf": [{"$ref": "#/components/schemas/Usage"}, {"type": "null"}]}, "choices": {"type": "array", "items": {"type": "object", "properties": {"index": {"type": "integer"}, "delta": {"type": "object", "properties": {"role": {"const": "assistant"}, "content": {"type": "string"}}}, "logprobs": {"type": "null"}, "finish_reason": finish}}}})),
        "Completion": obj("text_completion", json!({"usage": {"$ref": "#/components/schemas/Usage"}, "choices": {"type": "array", "items": {"type": "object", "properties": {"index": {"type": "integer"}, "text": {"type": "string"}, "logprobs": {"type": "null"}, "finish_reason": finish}}}})),
        "CompletionChunk": obj("text_completion", json!({"usage": {"oneOf": [{"$ref": "#/components/schemas/Usage"}, {"type": "null"}]}, "choices": {"type": "array", "items": {"type": "object", "properties": {"index": {"type": "integer"}, "text": {"type": "string"}, "logprobs": {"type": "null"}, "finish_reason": finish}}}})),
        "EmbeddingRequest": {"type": "object", "required": ["model", "input"], "properties": {"model": {"type": "string"}, "input": {"oneOf": [{"type": "string", "minLength": 1}, {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": 2048}]}, "encoding_format": {"enum": ["float", "base64"]}, "dimensions": {"type": "integer", "description": "Only the model's own."}}},
        "EmbeddingList": {"type": "object", "required": ["object", "data", "model", "usage"], "properties": {"object": {"const": "list"}, "model": {"type": "string"}, "data": {"type": "array", "items": {"type": "object", "properties": {"object": {"const": "embedding"}, "index": {"type": "integer"}, "embedding": {"oneOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string", "description": "base64 of little-endian f32"}]}}}}, "usage": {"type": "object", "properties": {"prompt_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}}}}},
        "ModelList": {"type": "object", "required": ["object", "data"], "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": {"type": "object", "required": ["id", "object", "created", "owned_by"], "properties": {"id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"}, "owned_by": {"type": "string"}}}}}}
    },
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "Required when the server was started with an API key (always off loopback)."}}})
}

/// The document from the route table: (path, method, operation).
pub fn document(routes: &[(&str, &str, Value)]) -> Value {
    let mut paths = Map::new();
    for (path, method, operation) in routes {
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = operation.clone();
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "lathe serve", "version": env!("CARGO_PKG_VERSION"), "description": "The workspace's owner over HTTP: OpenAI-compatible inference on the model library's GGUF models, embeddings, health and metrics. Every error is {\"error\": {\"message\", \"type\", \"code\"}}."},
        "security": [{}, {"bearer": []}],
        "paths": paths,
        "components": components(),
    })
}

pub fn json_doc(doc: &Value) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], doc.to_string()).into_response()
}

/// The page: reads /openapi.json and lists each route with its request and responses, schemas
/// expanded in place.
pub fn page() -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lathe serve: API</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
code,pre{font:13px ui-monospace,monospace}.m{display:inline-block;width:4rem;font-weight:bold;text-transform:uppercase}
details{border:1px solid #ccc;border-radius:4px;margin:.5rem 0;padding:.3rem .6rem}summary{cursor:pointer}
ul{margin:.2rem 0 .2rem 1.2rem;padding:0}.t{color:#666}.s{color:#a33}
</style></head><body><h1>lathe serve</h1><p id="info"></p><div id="routes">Reading /openapi.json…</div>
<script>
function el(t,c,h){const e=document.createElement(t);if(c)e.className=c;if(h!==undefined)e.textContent=h;return e}
function resolve(doc,s){while(s&&s.$ref){s=s.$ref.split('/').slice(1).reduce((o,k)=>o[k],doc)}return s||{}}
function type(s){return s.const!==undefined?JSON.stringify(s.const):s.enum?s.enum.map(JSON.stringify).join(' | '):[].concat(s.type||(s.oneOf?'one of':'any')).join(' | ')}
function tree(doc,s,depth){s=resolve(doc,s);const ul=el('ul');if(depth>6)return ul;
 const props=s.properties||{},req=new Set(s.required||[]);
 for(const [k,v0] of Object.entries(props)){const v=resolve(doc,v0),li=el('li');li.append(el('code','',k),el('span','t',' '+type(v)+(req.has(k)?' (required)':'')+(v.description?' — '+v.description:'')));li.append(tree(doc,v,depth+1));ul.append(li)}
 for(const alt of (s.oneOf||[])){const li=el('li','t','or '+type(resolve(doc,alt)));li.append(tree(doc,alt,depth+1));ul.append(li)}
 if(s.items){const li=el('li','t','items: '+type(resolve(doc,s.items)));li.append(tree(doc,s.items,depth+1));ul.append(li)}
 return ul}
fetch('/openapi.json').then(r=>r.json()).then(doc=>{
 document.getElementById('info').textContent=doc.info.description+' (version '+doc.info.version+')';
 const box=document.getElementById('routes');box.textContent='';
 for(const [path,ops] of Object.entries(doc.paths))for(const [method,op] of Object.entries(ops)){
  const d=el('details'),s=el('summary');s.append(el('span','m',method),el('code','',path),el('span','t','  '+op.summary));d.append(s,el('p','',op.description));
  if(op.requestBody){d.append(el('h4','','Request'));for(const [ct,c] of Object.entries(op.requestBody.content)){d.append(el('div','t',ct),tree(doc,c.schema,0))}}
  d.append(el('h4','','Responses'));for(const [code,r] of Object.entries(op.responses)){const p=el('div');p.append(el('b',code>=400?'s':'',code+' '),el('span','',r.description));d.append(p);for(const [ct,c] of Object.entries(r.content||{})){if(code==='200'){d.append(el('div','t',ct),tree(doc,c.schema,0))}}}
  box.append(d)}
}).catch(e=>{document.getElementById('routes').textContent='Could not read /openapi.json: '+e})
</script></body></html>
"#;

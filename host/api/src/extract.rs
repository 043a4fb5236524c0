//! Extractors that answer malformed requests in the API's error shape
//! (axum's own rejections are plain text).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// A path parameter.
pub struct PathParam<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParam<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| PathParam(p.0))
            .map_err(|e| ApiError::bad("invalid-path", "path", e.body_text()))
    }
}

/// Query parameters; unknown parameters are refused so a typo is not
/// silently ignored.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| QueryParams(q.0))
            .map_err(|e| {
                let text = e.body_text();
                // serde says "unknown field `x`, expected one of ...".
                let field = text
                    .split('`')
                    .nth(1)
                    .map(str::to_string)
                    .unwrap_or_else(|| "query".into());
                ApiError::bad(
                    "invalid-parameter",
                    field,
                    text.replace("Failed to deserialize query string: ", "")
                        .replace("unknown field", "unknown parameter"),
                )
            })
    }
}

/// A JSON body.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::bad("invalid-body", "body", e.body_text()))?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::bad(
                "invalid-body",
                "body",
                format!("the body is not the JSON this route takes: {e}"),
            )
        })
    }
}

/// `name=true|false` (or 1|0), false when left out.
pub fn flag(value: Option<&str>, name: &str) -> Result<bool, ApiError> {
    match value {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(ApiError::bad(
            "invalid-parameter",
            name,
            format!("{name}={other}: use true or false"),
        )),
    }
}

/// A page size: `default` when left out, 400 `page-too-large` outside
/// 1..=max.
pub fn limit(text: Option<&str>, default: u32, max: u32) -> Result<u32, ApiError> {
    let Some(text) = text else {
        return Ok(default);
    };
    let n: u32 = text.parse().map_err(|_| {
        ApiError::bad(
            "invalid-parameter",
            "limit",
            format!("limit={text}: a whole number from 1 to {max}"),
        )
    })?;
    if n == 0 || n > max {
        return Err(ApiError::bad(
            "page-too-large",
            "limit",
            format!("limit={n}: ask for 1 to {max} per page"),
        ));
    }
    Ok(n)
}

/// A position to continue from (`after`, `since`): a whole number, 0 or
/// more; 0 when left out.
pub fn position(text: Option<&str>, name: &str) -> Result<i64, ApiError> {
    match text {
        None => Ok(0),
        Some(text) => text.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::bad(
                "invalid-parameter",
                name,
                format!(
                    "{name}={text}: a whole number, 0 or more (the `next` of the previous page)"
                ),
            )
        }),
    }
}

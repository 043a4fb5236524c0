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

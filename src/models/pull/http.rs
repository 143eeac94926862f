//! GET with redirects followed by hand, so that a token only reaches the host it was meant for
//! and the Hugging Face Hub's `X-Linked-*` headers, sent on its redirect, are not lost.

use reqwest::header::{ETAG, HeaderMap, LOCATION, RANGE};
use reqwest::{StatusCode, Url};

use super::{CONNECT_TIMEOUT, PullError, send};

/// More hops than this means a loop or a misconfigured server.
const MAX_REDIRECTS: usize = 10;

/// A bearer token and the one origin (scheme, host, port) it may be sent to.
pub(super) struct Credentials<'a> {
    /// Base URL of the service owning the token, e.g. `https://huggingface.co`.
    pub(super) endpoint: &'a str,
    /// The token, sent as `Authorization: Bearer <token>` when there is one.
    pub(super) token: Option<&'a str>,
}

/// What the Hub says about a file before redirecting to its bytes.
#[derive(Debug, Default)]
pub(super) struct Linked {
    /// sha256 of an LFS file, from `X-Linked-Etag` (or `ETag`) when that is a 64-hex digest.
    pub(super) sha256: Option<String>,
    /// Length of the file, from `X-Linked-Size`.
    pub(super) size: Option<u64>,
}

/// The final response and what the Hub's hops said about the file.
pub(super) struct Fetched {
    pub(super) response: reqwest::Response,
    pub(super) url: String,
    pub(super) linked: Linked,
}

/// A client that leaves redirects to [`get`].
pub(super) fn client() -> Result<reqwest::Client, PullError> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("inferno/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(PullError::Client)
}

/// GETs `url` from byte `offset` on, following redirects. `credentials` go only to their own
/// origin, and `X-Linked-*` headers are read only from it, never from a CDN further on.
pub(super) async fn get(
    client: &reqwest::Client,
    url: &str,
    offset: u64,
    credentials: Option<&Credentials<'_>>,
) -> Result<Fetched, PullError> {
    let trusted = match credentials {
        Some(credentials) => Some(parse(credentials.endpoint)?.origin()),
        None => None,
    };
    let mut current = parse(url)?;
    let mut linked = Linked::default();
    for _ in 0..=MAX_REDIRECTS {
        let text = current.to_string();
        let own_origin = trusted.as_ref() == Some(&current.origin());
        let mut request = client.get(current.clone());
        if offset > 0 {
            request = request.header(RANGE, format!("bytes={offset}-"));
        }
        if own_origin && let Some(token) = credentials.and_then(|c| c.token) {
            request = request.bearer_auth(token);
        }
        let response = send(request, &text).await?;
        if own_origin {
            linked.merge(response.headers());
        }
        if !response.status().is_redirection() {
            return Ok(Fetched {
                response,
                url: text,
                linked,
            });
        }
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| PullError::Redirect {
                url: text.clone(),
                reason: format!("HTTP {} without a Location", response.status().as_u16()),
            })?;
        current = current.join(location).map_err(|err| PullError::Redirect {
            url: text.clone(),
            reason: format!("bad Location `{location}`: {err}"),
        })?;
        if current.scheme() != "https" && current.scheme() != "http" {
            return Err(PullError::Redirect {
                url: text,
                reason: format!("redirected to a `{}:` URL", current.scheme()),
            });
        }
    }
    Err(PullError::Redirect {
        url: url.to_owned(),
        reason: format!("more than {MAX_REDIRECTS} redirects"),
    })
}

impl Linked {
    /// Keeps the first digest and size any hop announces; `X-Linked-Etag` beats `ETag`.
    fn merge(&mut self, headers: &HeaderMap) {
        if self.sha256.is_none() {
            self.sha256 = ["x-linked-etag", ETAG.as_str()]
                .into_iter()
                .filter_map(|name| headers.get(name)?.to_str().ok())
                .find_map(etag_digest);
        }
        if self.size.is_none() {
            self.size = headers
                .get("x-linked-size")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse().ok());
        }
    }
}

/// `"<64 hex>"` (or weak `W/"…"`) → the lower-case digest; anything else, such as a git blob
/// sha1 of a small file, says nothing about the sha256.
fn etag_digest(etag: &str) -> Option<String> {
    let value = etag.trim();
    let value = value.strip_prefix("W/").unwrap_or(value);
    let value = value.trim_matches('"');
    (value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| value.to_ascii_lowercase())
}

fn parse(url: &str) -> Result<Url, PullError> {
    Url::parse(url).map_err(|err| PullError::Redirect {
        url: url.to_owned(),
        reason: format!("not a valid URL: {err}"),
    })
}

/// Whether `status` asks for credentials the request lacked or did not satisfy.
pub(super) fn is_denied(status: StatusCode) -> bool {
    status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_yield_digests_only_when_they_are_sha256() {
        let digest = "Ab".repeat(32);
        assert_eq!(
            etag_digest(&format!("\"{digest}\"")),
            Some(digest.to_ascii_lowercase())
        );
        assert_eq!(
            etag_digest(&format!("W/\"{digest}\"")),
            Some(digest.to_ascii_lowercase())
        );
        assert_eq!(
            etag_digest("\"0123456789abcdef0123456789abcdef01234567\""),
            None
        );
        assert_eq!(etag_digest("\"\""), None);
    }

    #[test]
    fn linked_headers_prefer_x_linked_etag() {
        let mut headers = HeaderMap::new();
        headers.insert(
            ETAG,
            format!("\"{}\"", "11".repeat(32)).parse().expect("header"),
        );
        headers.insert(
            "x-linked-etag",
            format!("\"{}\"", "22".repeat(32)).parse().expect("header"),
        );
        headers.insert("x-linked-size", "1234".parse().expect("header"));
        let mut linked = Linked::default();
        linked.merge(&headers);
        assert_eq!(linked.sha256, Some("22".repeat(32)));
        assert_eq!(linked.size, Some(1234));
    }
}

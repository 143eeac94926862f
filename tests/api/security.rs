//! Authentication, rate limits, resource limits, overload and timeouts, over HTTP.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use inferno::auth::JwtConfig;
use inferno::config::Config;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, chat_body, client, start_server, test_config};

const ALICE: &str = "sk-inf-alice-0123456789abcdef0123456789";
const BOB: &str = "sk-inf-bob-0123456789abcdef0123456789abcd";
const CAROL: &str = "sk-inf-carol-0123456789abcdef0123456789ab";
const LIMITED: &str = "sk-inf-limited-0123456789abcdef012345678";
const SOLO: &str = "sk-inf-solo-0123456789abcdef0123456789abc";
const TOKENS: &str = "sk-inf-tokens-0123456789abcdef0123456789a";
const HS_SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!!";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt")
}

/// A server with API keys and JWT (HS256 secret + RS256 public key) configured.
fn secured_server(dir: &tempfile::TempDir) -> TestServer {
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        format!(
            r#"
[[keys]]
id = "alice"
secret = "{ALICE}"

[[keys]]
id = "bob"
secret = "{BOB}"
models = ["some-other-model"]

[[keys]]
id = "carol"
secret = "{CAROL}"
expires = "2001-01-01T00:00:00Z"

[[keys]]
id = "limited"
secret = "{LIMITED}"
requests-per-minute = 3
tokens-per-minute = 100000

[[keys]]
id = "solo"
secret = "{SOLO}"
max-concurrent = 1

[[keys]]
id = "tokens"
secret = "{TOKENS}"
tokens-per-minute = 60
"#
        ),
    )
    .unwrap();
    let secret = dir.path().join("hs256.secret");
    std::fs::write(&secret, HS_SECRET).unwrap();
    let jwt: JwtConfig = toml::from_str(&format!(
        "hs256-secret-file = {:?}\npublic-key-file = {:?}\nissuer = \"https://issuer.test\"\naudience = \"inferno\"\n",
        secret,
        fixtures().join("rsa_public.pem")
    ))
    .unwrap();
    let config = Config {
        api_keys_file: Some(keys),
        jwt: Some(jwt),
        // A short window so the test sees the bucket refill.
        rate_limit_window_secs: 4,
        ..test_config()
    };
    start_server(config)
}

async fn chat_with(server: &TestServer, headers: &[(&str, String)]) -> (u16, Value) {
    let mut request = client()
        .post(server.url("/v1/chat/completions"))
        .json(&chat_body(&server.model, "Hi", 2));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn bearer(token: &str) -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {token}"))]
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(extra: Value) -> Value {
    let mut claims =
        json!({"sub": "svc-1", "iss": "https://issuer.test", "aud": "inferno", "exp": now() + 600});
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    claims
}

fn hs256(claims: &Value) -> String {
    let key = EncodingKey::from_secret(HS_SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).unwrap()
}

fn rs256(claims: &Value) -> String {
    let pem = std::fs::read(fixtures().join("rsa_private.pem")).unwrap();
    let key = EncodingKey::from_rsa_pem(&pem).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).unwrap()
}

#[tokio::test]
async fn api_keys_and_jwts_guard_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = secured_server(&dir);
    let unauthorized = |(status, body): (u16, Value)| {
        assert_eq!(
            assert_error(status, &body, 401)["code"],
            "invalid_api_key",
            "{body}"
        );
    };
    unauthorized(chat_with(&server, &[]).await);
    unauthorized(chat_with(&server, &bearer("sk-inf-wrong-key-000000000000000000000")).await);
    unauthorized(chat_with(&server, &bearer(CAROL)).await);
    unauthorized(chat_with(&server, &[("authorization", format!("Basic {ALICE}"))]).await);
    assert_eq!(
        chat_with(&server, &bearer(ALICE)).await.0,
        200,
        "Bearer works"
    );
    assert_eq!(
        chat_with(&server, &[("x-api-key", ALICE.to_owned())])
            .await
            .0,
        200,
        "x-api-key works"
    );

    // Bob may use another model only: 403 here, and the model is hidden from his listing.
    let (status, body) = chat_with(&server, &bearer(BOB)).await;
    assert_eq!(
        assert_error(status, &body, 403)["code"],
        "model_not_allowed"
    );
    let listing: Value = client()
        .get(server.url("/v1/models"))
        .bearer_auth(BOB)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listing["data"], json!([]));
    let one = client()
        .get(server.url(&format!("/v1/models/{}", server.model)))
        .bearer_auth(BOB)
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 404);

    // Health and metrics stay open.
    assert_eq!(
        client()
            .get(server.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client()
            .get(server.url("/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // JWTs: valid HS256 and RS256 tokens work; the rest is rejected.
    assert_eq!(
        chat_with(&server, &bearer(&hs256(&claims(json!({})))))
            .await
            .0,
        200
    );
    assert_eq!(
        chat_with(&server, &bearer(&rs256(&claims(json!({})))))
            .await
            .0,
        200
    );
    let limited = claims(json!({"models": ["some-other-model"]}));
    assert_eq!(
        chat_with(&server, &bearer(&rs256(&limited))).await.0,
        403,
        "models claim honoured"
    );
    for bad in [
        hs256(&claims(json!({"exp": now() - 3600}))),
        hs256(&claims(json!({"nbf": now() + 3600}))),
        hs256(&claims(json!({"iss": "https://evil.test"}))),
        hs256(&claims(json!({"aud": "someone-else"}))),
        {
            let token = hs256(&claims(json!({})));
            format!("{}x", &token[..token.len() - 1])
        },
        {
            // alg: none
            use base64::Engine;
            let b64 =
                |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&claims(json!({})))
            )
        },
        {
            // Algorithm confusion: HS256 signed with the RSA public key as the secret.
            let public = std::fs::read(fixtures().join("rsa_public.pem")).unwrap();
            let key = EncodingKey::from_secret(&public).unwrap();
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(json!({})), &key).unwrap()
        },
    ] {
        unauthorized(chat_with(&server, &bearer(&bad)).await);
    }
    crate::common::wait_idle(&server).await;
}

#[tokio::test]
async fn rate_limits_answer_429_with_openai_headers_then_recover() {
    let dir = tempfile::tempdir().unwrap();
    let server = secured_server(&dir);
    let request = json!({"model": server.model, "prompt": "Hi", "max_tokens": 1});
    let send = || async {
        client()
            .post(server.url("/v1/completions"))
            .bearer_auth(LIMITED)
            .json(&request)
            .send()
            .await
            .unwrap()
    };
    // 3 requests per (test) window of 4 s: the bucket holds 3 and refills one per 1.33 s.
    let mut limited = None;
    for sent in 1..=4 {
        let response = send().await;
        if response.status() == 429 {
            limited = Some((sent, response));
            break;
        }
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-ratelimit-limit-requests"], "3");
    }
    let (sent, response) = limited.expect("the 4th request is limited");
    assert_eq!(sent, 4);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(response.headers()["x-ratelimit-remaining-requests"], "0");
    assert!(
        response
            .headers()
            .contains_key("x-ratelimit-reset-requests")
    );
    assert!(response.headers().contains_key("x-ratelimit-limit-tokens"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(send().await.status(), 200, "allowed again after the refill");
    crate::common::wait_idle(&server).await;
}

#[tokio::test]
async fn concurrent_requests_per_key_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let server = secured_server(&dir);
    let mut body = chat_body(&server.model, "Count to a hundred.", 300);
    body["stream"] = json!(true);
    body["ignore_eos"] = json!(true);
    let mut first = client()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(SOLO)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    first.chunk().await.unwrap();
    let (status, reply) = chat_with(&server, &bearer(SOLO)).await;
    assert_eq!(
        assert_error(status, &reply, 429)["code"],
        "rate_limit_exceeded"
    );
    drop(first);
    let mut ok = false;
    for _ in 0..100 {
        if chat_with(&server, &bearer(SOLO)).await.0 == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "the slot is released when the first stream ends");
    crate::common::wait_idle(&server).await;
}

#[tokio::test]
async fn overload_answers_every_request_with_a_result_or_503() {
    let config = Config {
        parallel: 2,
        queue_capacity: 2,
        ..test_config()
    };
    let server = start_server(config);
    let sent = 16;
    let replies = futures_util::future::join_all((0..sent).map(|i| {
        let server = server.clone();
        async move {
            let body = chat_body(&server.model, &format!("Say the number {i}."), 16);
            let response = client()
                .post(server.url("/v1/chat/completions"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            let body: Value = response.json().await.unwrap();
            (status, retry_after, body)
        }
    }))
    .await;
    let completed = replies
        .iter()
        .filter(|(s, _, b)| *s == 200 && b["choices"][0]["finish_reason"].is_string())
        .count();
    let rejected = replies.iter().filter(|(s, r, _)| *s == 503 && *r).count();
    println!(
        "overload: sent {sent}, completed {completed}, rejected with 503 {rejected}, other {}",
        sent - completed - rejected
    );
    assert_eq!(
        completed + rejected,
        sent,
        "nothing but results and 503s: {replies:?}"
    );
    assert!(
        completed >= 4 && rejected >= 1,
        "completed {completed}, rejected {rejected}"
    );
    let (status, _) = crate::common::post(
        &server,
        "/v1/chat/completions",
        &chat_body(&server.model, "Hi", 2),
    )
    .await;
    assert_eq!(status, 200, "served normally afterwards");
    crate::common::wait_idle(&server).await;
}

#[tokio::test]
async fn deadlines_end_requests_and_free_their_sequence() {
    let config = Config {
        parallel: 1,
        request_timeout_secs: 3,
        queue_timeout_secs: 1,
        ..test_config()
    };
    let server = start_server(config);
    let mut body = chat_body(&server.model, "Count to a thousand.", 900);
    body["ignore_eos"] = json!(true);
    let (status, reply) = crate::common::post(&server, "/v1/chat/completions", &body).await;
    assert_eq!(assert_error(status, &reply, 504)["code"], "timeout");

    body["stream"] = json!(true);
    let stream = client()
        .post(server.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    // While it runs, another request waits past the queue timeout: 503 and x-should-retry.
    let (waited, waited_body) = {
        let response = client()
            .post(server.url("/v1/chat/completions"))
            .json(&chat_body(&server.model, "Hi", 2))
            .send()
            .await
            .unwrap();
        let should_retry = response.headers().get("x-should-retry").cloned();
        assert_eq!(
            should_retry.as_ref().map(|v| v.to_str().unwrap()),
            Some("true")
        );
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap(),
        )
    };
    assert_eq!(
        assert_error(waited, &waited_body, 503)["code"],
        "queue_timeout"
    );
    let events = crate::common::sse_events(stream).await;
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(
        last["error"]["code"], "timeout",
        "the stream ends with an error event"
    );
    let (status, _) = crate::common::post(
        &server,
        "/v1/chat/completions",
        &chat_body(&server.model, "Hi", 2),
    )
    .await;
    assert_eq!(status, 200, "the timed-out sequence was freed");
    crate::common::wait_idle(&server).await;
}

#[tokio::test]
async fn configured_resource_limits_are_enforced() {
    let config = Config {
        max_tokens_limit: Some(16),
        max_prompt_tokens: Some(64),
        max_messages: 3,
        max_stop: 2,
        ..test_config()
    };
    let server = start_server(config);
    let base = chat_body(&server.model, "Hi", 8);
    let cases = [
        (json!({"max_tokens": 17}), "max_tokens"),
        (
            json!({"messages": [{"role": "user", "content": "word ".repeat(100)}]}),
            "messages",
        ),
        (
            json!({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}),
            "messages",
        ),
        (json!({"stop": ["a", "b", "c"]}), "stop"),
    ];
    for (patch, param) in cases {
        let mut body = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, reply) = crate::common::post(&server, "/v1/chat/completions", &body).await;
        assert_eq!(assert_error(status, &reply, 400)["param"], param, "{patch}");
    }
    let mut unbounded = base.clone();
    unbounded.as_object_mut().unwrap().remove("max_tokens");
    unbounded["ignore_eos"] = json!(true);
    let (status, reply) = crate::common::post(&server, "/v1/chat/completions", &unbounded).await;
    assert_eq!(status, 200);
    assert_eq!(
        reply["usage"]["completion_tokens"], 16,
        "the cap is also the default"
    );
}

#[tokio::test]
async fn cors_is_off_by_default_and_follows_the_configured_origins() {
    let preflight = |server: &TestServer| {
        client()
            .request(reqwest::Method::OPTIONS, server.url("/v1/chat/completions"))
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST")
            .send()
    };
    let default = crate::common::server();
    let response = preflight(default).await.unwrap();
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
    let server = start_server(Config {
        cors_origins: Some("https://app.example".to_owned()),
        ..test_config()
    });
    let response = preflight(&server).await.unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example"
    );
}

#[tokio::test]
async fn tokens_generated_before_a_client_leaves_are_charged() {
    let dir = tempfile::tempdir().unwrap();
    let server = secured_server(&dir);
    // 60 tokens per (test) window of 4 s. Stream well past that, then hang up.
    let mut body = chat_body(&server.model, "Count upwards from one.", 300);
    body["stream"] = json!(true);
    body["ignore_eos"] = json!(true);
    let mut stream = client()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(TOKENS)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut seen = String::new();
    while seen.matches("\"content\":").count() < 100 {
        let chunk = stream.chunk().await.unwrap().expect("the stream continues");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(stream);
    // The ~100 generated tokens put the bucket deep in debt: the next request must wait.
    let (status, reply) = chat_with(&server, &bearer(TOKENS)).await;
    assert_eq!(
        assert_error(status, &reply, 429)["code"],
        "rate_limit_exceeded"
    );
    crate::common::wait_idle(&server).await;
}

#[tokio::test]
async fn a_request_never_served_gives_its_rate_limit_charge_back() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        format!(
            "[[keys]]\nid = \"hog\"\nsecret = \"{ALICE}\"\n\n[[keys]]\nid = \"two\"\nsecret = \"{BOB}\"\nrequests-per-minute = 2\n"
        ),
    )
    .unwrap();
    let config = Config {
        api_keys_file: Some(keys),
        parallel: 1,
        queue_timeout_secs: 1,
        ..test_config()
    };
    let server = start_server(config);
    let mut body = chat_body(&server.model, "Count upwards from one.", 400);
    body["stream"] = json!(true);
    body["ignore_eos"] = json!(true);
    let mut hog = client()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(ALICE)
        .json(&body)
        .send()
        .await
        .unwrap();
    hog.chunk().await.unwrap();
    // The slot is taken: this request times out in the queue (503) and is refunded.
    let (status, reply) = chat_with(&server, &bearer(BOB)).await;
    assert_eq!(assert_error(status, &reply, 503)["code"], "queue_timeout");
    drop(hog);
    for attempt in 0..2 {
        let mut status = 0;
        for _ in 0..100 {
            status = chat_with(&server, &bearer(BOB)).await.0;
            if status != 503 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            status, 200,
            "request {attempt} of 2 fits the budget after the refund"
        );
    }
    crate::common::wait_idle(&server).await;
}

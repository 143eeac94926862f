//! Optional OpenTelemetry trace export: bridges `tracing` spans to an OTLP/HTTP (protobuf)
//! collector, so request spans and their GenAI attributes show up in any OTLP backend.
//!
//! Spans are batched by the SDK's `BatchSpanProcessor`, which owns a dedicated OS thread.
//! That thread sends each batch with reqwest on a private current-thread tokio runtime, so
//! exporting never occupies (or depends on) the server's runtime threads and cannot deadlock
//! a current-thread runtime during shutdown.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response, ResponseBodyTooLarge};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// Path of the OTLP/HTTP traces signal, appended to a base endpoint.
const TRACES_PATH: &str = "/v1/traces";
/// Deadline for one export, retries included; kept under `SHUTDOWN_TIMEOUT` so the final
/// flush can finish (or fail) before shutdown gives up on it.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(4);
/// How long `TelemetryGuard::shutdown` waits for the last batch to be exported.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Collector responses are tiny; a larger body means something other than a collector.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Errors setting up or shutting down the OTLP trace exporter.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The collector endpoint is not an absolute http(s) URL.
    #[error("invalid OTLP endpoint `{endpoint}`: {reason}")]
    InvalidEndpoint {
        /// The endpoint as the user gave it.
        endpoint: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The HTTP client used to reach the collector could not be built.
    #[error("cannot build the OTLP HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The private runtime that drives exports could not be started.
    #[error("cannot start the OTLP export runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The OTLP span exporter rejected its configuration.
    #[error("cannot build the OTLP span exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// The buffered spans could not be delivered to the collector.
    #[error("exporting the remaining spans to the OTLP collector failed: {0}")]
    Flush(#[source] OTelSdkError),
    /// The exporter could not be stopped cleanly.
    #[error("OTLP trace exporter shutdown failed: {0}")]
    Shutdown(#[source] OTelSdkError),
}

/// Keeps the tracer provider alive; flushes and shuts it down on drop (or via `shutdown()`).
///
/// Shutdown blocks the calling thread for up to a few seconds while the last batch is sent.
#[must_use = "dropping the guard shuts the exporter down immediately"]
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports every span still buffered, then stops the exporter; reports a failed flush.
    pub fn shutdown(mut self) -> Result<(), TelemetryError> {
        let Some(provider) = self.provider.take() else {
            return Ok(());
        };
        // The SDK's shutdown drops the final export's outcome, so flush first to learn it,
        // and stop the exporter whatever the flush did.
        let flushed = provider.force_flush().map_err(TelemetryError::Flush);
        let stopped = provider
            .shutdown_with_timeout(SHUTDOWN_TIMEOUT)
            .map_err(TelemetryError::Shutdown);
        flushed.and(stopped)
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Drop cannot report; `shutdown()` is the way to learn whether the last batch arrived.
            let _ = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT);
        }
    }
}

/// A tracing-subscriber layer exporting spans to `endpoint` with `service.name = service_name`
/// (and `service.version` = the crate version), batch-exported over OTLP/HTTP protobuf.
///
/// `endpoint` is either the collector base (`http://127.0.0.1:4318`, `/v1/traces` is appended)
/// or the full traces URL ending in `/v1/traces`. Works inside or outside a tokio runtime.
/// Record integer fields as `i64`: the bridge exports `u64`/`u32`/`usize` values as strings.
pub fn otlp_layer<S>(
    endpoint: &str,
    service_name: &str,
) -> Result<(impl Layer<S> + Send + Sync + use<S>, TelemetryGuard), TelemetryError>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    let traces_url = traces_endpoint(endpoint)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(CollectorClient::new()?)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces_url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer(env!("CARGO_PKG_NAME"));
    let layer = tracing_opentelemetry::layer().with_tracer(tracer);
    Ok((
        layer,
        TelemetryGuard {
            provider: Some(provider),
        },
    ))
}

/// Turns the user's endpoint into the full OTLP/HTTP traces URL, rejecting anything that
/// is not an absolute http(s) URL with a host.
fn traces_endpoint(endpoint: &str) -> Result<String, TelemetryError> {
    let invalid = |reason: String| TelemetryError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let mut url =
        reqwest::Url::parse(endpoint.trim()).map_err(|error| invalid(error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme `{}` is not supported, use http or https",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("the URL has no host".to_owned()));
    }
    if url.fragment().is_some() {
        return Err(invalid("the URL must not have a #fragment".to_owned()));
    }
    if !url.path().ends_with(TRACES_PATH) {
        // A base URL, possibly with a prefix (`https://gateway/otlp`): the OTLP spec appends
        // the signal path to it.
        let path = format!("{}{TRACES_PATH}", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    Ok(url.into())
}

/// The OTLP exporter's HTTP transport: reqwest 0.12 driven by a private current-thread
/// runtime, so exports run entirely on the batch processor's own thread.
#[derive(Debug)]
struct CollectorClient {
    client: reqwest::Client,
    // Only `None` once dropped; shut down in the background because the client may be
    // dropped from inside an async context, where dropping a runtime would panic.
    runtime: Option<tokio::runtime::Runtime>,
}

impl CollectorClient {
    fn new() -> Result<Self, TelemetryError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("otlp-export")
            .build()
            .map_err(TelemetryError::Runtime)?;
        let client = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(TelemetryError::HttpClient)?;
        Ok(Self {
            client,
            runtime: Some(runtime),
        })
    }

    /// Sends one request on the private runtime; called only from the batch processor's
    /// thread, which is never inside a tokio runtime, so `block_on` is allowed there.
    fn send_blocking(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or("the OTLP export runtime is already stopped")?;
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err("OTLP export was driven from inside a tokio runtime".into());
        }
        let request = reqwest::Request::try_from(request)?;
        runtime.block_on(send_and_read(&self.client, request))
    }
}

/// Performs the request and collects the (size-capped) response for the exporter.
async fn send_and_read(
    client: &reqwest::Client,
    request: reqwest::Request,
) -> Result<Response<Bytes>, HttpError> {
    let mut response = client.execute(request).await?;
    let status = response.status();
    let headers = std::mem::take(response.headers_mut());
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(Box::new(ResponseBodyTooLarge::new()));
        }
        body.extend_from_slice(&chunk);
    }
    let mut reply = Response::builder().status(status).body(Bytes::from(body))?;
    *reply.headers_mut() = headers;
    Ok(reply)
}

impl Drop for CollectorClient {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

// Written out instead of `#[async_trait]` (which is what the trait uses) to avoid a direct
// dependency on the macro crate; the signature is exactly what the macro generates.
impl HttpClient for CollectorClient {
    fn send_bytes<'client, 'future>(
        &'client self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'future>>
    where
        'client: 'future,
        Self: 'future,
    {
        Box::pin(async move { self.send_blocking(request) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes as BodyBytes;
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::routing::post;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue as ProtoKeyValue, any_value};
    use prost::Message as _;
    use tokio::sync::mpsc;
    use tracing::field::Empty;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// What the stand-in collector saw: the request's content type and its body.
    type Export = (Option<String>, BodyBytes);

    /// Starts a stand-in OTLP/HTTP collector on its own thread and runtime (so the code under
    /// test may block its caller's runtime), answering every traces POST with `status`.
    fn start_collector(status: StatusCode) -> (String, mpsc::UnboundedReceiver<Export>) {
        let (sender, receiver) = mpsc::unbounded_channel::<Export>();
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |headers: HeaderMap, body: BodyBytes| async move {
                let content_type = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned);
                let _ = sender.send((content_type, body));
                // An empty body is a valid, fully successful ExportTraceServiceResponse.
                (status, [(header::CONTENT_TYPE, "application/x-protobuf")])
            }),
        );
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind the collector on loopback");
        let address = listener.local_addr().expect("listener has an address");
        listener
            .set_nonblocking(true)
            .expect("tokio needs a non-blocking listener");
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("collector runtime starts");
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("listener joins tokio");
                axum::serve(listener, app).await.expect("collector serves");
            });
        });
        (format!("http://{address}"), receiver)
    }

    fn attribute<'a>(attributes: &'a [ProtoKeyValue], key: &str) -> Option<&'a any_value::Value> {
        attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|value: &AnyValue| value.value.as_ref())
    }

    fn string(value: &str) -> any_value::Value {
        any_value::Value::StringValue(value.to_owned())
    }

    #[tokio::test]
    async fn request_span_reaches_the_collector_with_genai_attributes() {
        let (endpoint, mut received) = start_collector(StatusCode::OK);
        let (layer, guard) =
            otlp_layer(&endpoint, "inferno-test").expect("exporter builds for a loopback URL");
        let subscriber = tracing_subscriber::registry().with(layer);

        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                method = "POST",
                path = "/v1/chat/completions",
                request_id = "req-123",
                "gen_ai.request.model" = Empty,
                "gen_ai.usage.input_tokens" = Empty,
                "gen_ai.usage.output_tokens" = Empty,
                "gen_ai.response.finish_reasons" = Empty,
                "gen_ai.operation.name" = Empty,
            );
            span.record("gen_ai.request.model", "qwen2.5-0.5b-instruct");
            span.record("gen_ai.usage.input_tokens", 17_i64);
            span.record("gen_ai.usage.output_tokens", 42_i64);
            span.record("gen_ai.response.finish_reasons", "stop");
        });

        // Called straight from this current-thread runtime: exports must not need it.
        guard.shutdown().expect("final flush reaches the collector");

        let (content_type, body) = tokio::time::timeout(Duration::from_secs(5), received.recv())
            .await
            .expect("collector receives an export in time")
            .expect("collector channel stays open");
        assert_eq!(content_type.as_deref(), Some("application/x-protobuf"));
        assert!(received.try_recv().is_err(), "one span gives one export");

        let export = ExportTraceServiceRequest::decode(body).expect("body is OTLP protobuf");
        assert_eq!(export.resource_spans.len(), 1);
        let resource_spans = &export.resource_spans[0];
        let resource = resource_spans.resource.as_ref().expect("resource is sent");
        assert_eq!(
            attribute(&resource.attributes, "service.name"),
            Some(&string("inferno-test"))
        );
        assert_eq!(
            attribute(&resource.attributes, "service.version"),
            Some(&string(env!("CARGO_PKG_VERSION")))
        );

        let spans: Vec<_> = resource_spans
            .scope_spans
            .iter()
            .flat_map(|scope| &scope.spans)
            .collect();
        assert_eq!(spans.len(), 1);
        let span = spans[0];
        assert_eq!(span.name, "request");
        let attributes = &span.attributes;
        assert_eq!(
            attribute(attributes, "gen_ai.request.model"),
            Some(&string("qwen2.5-0.5b-instruct"))
        );
        assert_eq!(
            attribute(attributes, "gen_ai.usage.input_tokens"),
            Some(&any_value::Value::IntValue(17))
        );
        assert_eq!(
            attribute(attributes, "gen_ai.usage.output_tokens"),
            Some(&any_value::Value::IntValue(42))
        );
        assert_eq!(
            attribute(attributes, "gen_ai.response.finish_reasons"),
            Some(&string("stop"))
        );
        assert_eq!(attribute(attributes, "method"), Some(&string("POST")));
        assert_eq!(
            attribute(attributes, "request_id"),
            Some(&string("req-123"))
        );
        // A field declared `Empty` and never recorded must not be invented.
        assert_eq!(attribute(attributes, "gen_ai.operation.name"), None);
    }

    #[test]
    fn rejected_export_fails_the_shutdown() {
        let (endpoint, mut received) = start_collector(StatusCode::BAD_REQUEST);
        let (layer, guard) = otlp_layer(&endpoint, "inferno-test").expect("exporter builds");
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            drop(tracing::info_span!("request", request_id = "req-400"));
        });

        let error = guard
            .shutdown()
            .expect_err("the collector refused the spans");
        assert!(matches!(error, TelemetryError::Flush(_)), "{error}");
        assert!(
            received.try_recv().is_ok(),
            "the export reached the collector"
        );
    }

    #[test]
    fn base_endpoint_gets_the_traces_path() {
        for (given, expected) in [
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
            ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces"),
            (
                "https://otel.example/otlp/",
                "https://otel.example/otlp/v1/traces",
            ),
            (
                "http://127.0.0.1:4318/v1/traces",
                "http://127.0.0.1:4318/v1/traces",
            ),
        ] {
            assert_eq!(
                traces_endpoint(given).expect("valid endpoint"),
                expected,
                "{given}"
            );
        }
    }

    #[test]
    fn non_http_endpoints_are_rejected() {
        for given in [
            "127.0.0.1:4318",
            "grpc://127.0.0.1:4317",
            "file:///tmp/traces",
            "not a url",
            "",
            "http://127.0.0.1:4318/#frag",
        ] {
            let error = traces_endpoint(given).expect_err(given);
            assert!(
                matches!(&error, TelemetryError::InvalidEndpoint { endpoint, .. } if endpoint == given),
                "{given}: {error}"
            );
        }
    }

    #[test]
    fn layer_setup_reports_a_bad_endpoint() {
        let result = otlp_layer::<tracing_subscriber::Registry>("ftp://127.0.0.1:21", "inferno");
        let Err(error) = result else {
            panic!("an ftp endpoint must be refused");
        };
        assert!(error.to_string().contains("scheme `ftp`"), "{error}");
    }
}

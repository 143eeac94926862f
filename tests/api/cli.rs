//! The `inferno` binary: configuration precedence, graceful shutdown, and `inferno bench`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{SERIAL, chat_body, client, model, server};

const BIN: &str = env!("CARGO_BIN_EXE_inferno");

#[test]
fn configuration_layers_defaults_file_env_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("inferno.toml");
    std::fs::write(
        &file,
        "port = 9001\nparallel = 3\nctx-size = 2048\nqueue-capacity = 5\n",
    )
    .unwrap();
    let output = Command::new(BIN)
        .args(["serve", "--print-config", "--config"])
        .arg(&file)
        .args(["--parallel", "6"])
        .env("INFERNO_PORT", "9002")
        .env("INFERNO_QUEUE_CAPACITY", "7")
        .env("OMP_WAIT_POLICY", "passive")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: toml::Table = String::from_utf8(output.stdout).unwrap().parse().unwrap();
    assert_eq!(printed["port"].as_integer(), Some(9002), "env beats file");
    assert_eq!(printed["parallel"].as_integer(), Some(6), "flag beats file");
    assert_eq!(
        printed["queue-capacity"].as_integer(),
        Some(7),
        "env beats file"
    );
    assert_eq!(
        printed["ctx-size"].as_integer(),
        Some(2048),
        "file beats default"
    );
    assert_eq!(printed["batch-tokens"].as_integer(), Some(512), "default");
}

#[test]
fn invalid_configuration_lists_every_problem() {
    let output = Command::new(BIN)
        .args([
            "serve",
            "--print-config",
            "--parallel",
            "0",
            "--queue-capacity",
            "0",
        ])
        .env("OMP_WAIT_POLICY", "passive")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("parallel") && stderr.contains("queue-capacity"),
        "{stderr}"
    );
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    let model = model();
    let ServeProcess {
        mut child,
        base,
        log,
    } = spawn_serve(&[
        "--ctx-size",
        "512",
        "--parallel",
        "2",
        "--shutdown-delay-secs",
        "2",
    ])
    .await;
    let mut body = chat_body(&model.id, "Count from one to fifty.", 60);
    body["stream"] = json!(true);
    body["ignore_eos"] = json!(true);
    let mut response = client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.chunk().await.unwrap().expect("first chunk");
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let rest = response.text().await.unwrap();
    assert!(
        rest.contains("\"finish_reason\":\"length\""),
        "the in-flight stream finished: {rest}"
    );
    assert!(rest.trim_end().ends_with("data: [DONE]"));
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    let lines = log.join().unwrap();
    assert!(lines.iter().any(|l| l.contains("SIGTERM")), "{lines:?}");
    assert!(
        client().get(format!("{base}/health")).send().await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn sigterm_ends_requests_that_outlast_the_grace_period() {
    let model = model();
    let ServeProcess {
        mut child,
        base,
        log,
    } = spawn_serve(&[
        "--ctx-size",
        "4096",
        "--parallel",
        "1",
        "--shutdown-grace-secs",
        "1",
    ])
    .await;
    // Far more tokens than one second allows on any machine this runs on.
    let mut body = chat_body(&model.id, "Count from one to a thousand.", 3000);
    body["stream"] = json!(true);
    body["ignore_eos"] = json!(true);
    let mut response = client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.chunk().await.unwrap().expect("first chunk");
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let rest = response.text().await.unwrap();
    assert!(
        rest.contains("\"code\":\"shutting_down\""),
        "the stream ends with an error event: {}",
        &rest[rest.len().saturating_sub(400)..]
    );
    assert!(
        !rest.contains("\"finish_reason\":\"length\""),
        "it did not run to its end"
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    let lines = log.join().unwrap();
    assert!(
        lines.iter().any(|l| l.contains("grace period over")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn bench_reports_latency_and_throughput_per_level() {
    let _serial = SERIAL.lock().await;
    let server = server();
    let url = format!("{}/v1", server.base);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args([
                "bench",
                "--url",
                &url,
                "--concurrency",
                "1,2",
                "--requests",
                "4",
                "--max-tokens",
                "8",
            ])
            .args([
                "--prompt-tokens",
                "16",
                "--ignore-eos",
                "--json",
                "-",
                "--timeout",
                "120",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let levels = report["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 2);
    for level in levels {
        assert_eq!(
            (level["ok"].as_u64(), level["errors"].as_u64()),
            (Some(4), Some(0)),
            "{level}"
        );
        assert_eq!(
            level["completion_tokens"].as_u64(),
            Some(32),
            "ignore_eos makes every request 8 tokens"
        );
        assert!(level["ttft_ms"]["p50"].as_f64().unwrap() > 0.0);
        assert!(level["gen_tokens_per_s"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(
        report["model"],
        server.model.as_str(),
        "the model was discovered from /v1/models"
    );
}

#[tokio::test]
async fn keys_made_by_inferno_keys_work_and_sighup_revokes_them() {
    let output = Command::new(BIN)
        .args(["keys", "new", "--id", "dave"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let (key, entry) = text.split_once('\n').unwrap();
    assert!(
        key.starts_with("sk-inf-") && !entry.contains(key),
        "only the hash goes into the file"
    );
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(&keys, entry).unwrap();

    let model = model();
    let keys_arg = keys.to_str().unwrap();
    let ServeProcess {
        mut child, base, ..
    } = spawn_serve(&[
        "--ctx-size",
        "256",
        "--parallel",
        "1",
        "--api-keys-file",
        keys_arg,
    ])
    .await;
    let chat = |key: Option<&str>| {
        let mut request = client()
            .post(format!("{base}/v1/chat/completions"))
            .json(&chat_body(&model.id, "Hi", 2));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(chat(None).await, 401);
    assert_eq!(chat(Some(key)).await, 200);

    std::fs::write(&keys, "# every key revoked\n").unwrap();
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut revoked = false;
    for _ in 0..100 {
        if chat(Some(key)).await == 401 {
            revoked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(revoked, "SIGHUP reloads the keys file");
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(child.wait().unwrap().success());
}

/// An `inferno serve` process of the default model on a free port.
struct ServeProcess {
    child: std::process::Child,
    /// `http://127.0.0.1:<port>`.
    base: String,
    /// Its log lines, once the process has exited.
    log: std::thread::JoinHandle<Vec<String>>,
}

/// Starts `inferno serve --port 0 --model <default> <args>` and waits until `/ready` is 200.
async fn spawn_serve(args: &[&str]) -> ServeProcess {
    let mut child = Command::new(BIN)
        .args(["serve", "--port", "0", "--model"])
        .arg(&model().path)
        .args(args)
        .env("INFERNO_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (address_tx, address_rx) = std::sync::mpsc::channel();
    let log = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("address=").nth(1) {
                let _ = address_tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
            }
            lines.push(line);
        }
        lines
    });
    let address = address_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the server logs its address");
    let base = format!("http://{address}");
    for _ in 0..600 {
        if client()
            .get(format!("{base}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ServeProcess { child, base, log }
}

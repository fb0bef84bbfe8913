//! The control plane on a real full disk: writes fail with a clear `UNAVAILABLE`, health and
//! readiness say so, and once space is freed the next write (a revocation) works and reaches
//! every data plane, without a restart.

use std::path::{Path, PathBuf};
use std::process::Command;

use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::controlplane::{ADMIN_KEY, TestControlplane};
use crate::support::dataplane::TestDataplane;
use crate::support::wait;

/// A small tmpfs for one test, unmounted when dropped (also when the test fails).
struct SmallFilesystem(tempfile::TempDir);

impl SmallFilesystem {
    /// `None`, with a message, where it cannot be mounted (not root).
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "aurora-e2e", dir.path().to_str().unwrap()])
            .output();
        match status {
            Ok(out) if out.status.success() => Some(SmallFilesystem(dir)),
            other => {
                eprintln!("skipped: cannot mount a tmpfs (needs root): {other:?}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Writes a file until the filesystem is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        while file.write(&[0u8; 16 * 1024]).is_ok_and(|n| n > 0) {}
        while file.write(&[0u8; 512]).is_ok_and(|n| n > 0) {}
        path
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

async fn http_status(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn a_full_disk_is_reported_and_writes_work_again_once_space_is_freed() {
    let Some(fs) = SmallFilesystem::mount("4m") else { return };
    let upstream = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(200).set_body_string("{}")).mount(&upstream).await;
    let base_url = format!("{}/anthropic/v1", upstream.uri());
    let env = [
        ("AURORA_MASTER_KEY", ADMIN_KEY),
        ("AURORA_STORE_PROBE_INTERVAL", "200ms"),
        ("ANTHROPIC_BASE_URL", base_url.as_str()),
        ("ANTHROPIC_API_KEY", "sk-ant-upstream"),
    ];
    let cp = TestControlplane::start_in(fs.path(), &env).await;
    let dp = TestDataplane::subscribed(&cp.url(), "dp-disk", &[]).await;
    dp.wait_ready().await;
    let created = cp.cli(&["keys", "create", "--name", "victim", "-o", "json", "--wait"]).await.json();
    let (id, secret) = (created["id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned());
    assert_eq!(dp.call(&secret).await, 200);
    assert_eq!(http_status(&cp.metrics_url("/healthz")).await.0, 200);

    let filler = fs.fill();
    // Creating keys fails as the write-ahead log can no longer grow: a precise, retryable error.
    let description = "d".repeat(1000);
    let mut failures = 0;
    for i in 0..1000 {
        let out = cp.cli(&["keys", "create", "--name", &format!("k{i}"), "--description", &description]).await;
        if out.code != Some(0) {
            let line = out.error_line();
            assert!(
                line.starts_with("error: UNAVAILABLE: the store cannot write (database or disk is full)"),
                "{line}"
            );
            failures += 1;
            if failures == 3 {
                break;
            }
        }
    }
    assert_eq!(failures, 3, "the disk never filled up");

    // Health and readiness say so, with the reason, until the disk has room again.
    for path in ["/healthz", "/readyz"] {
        let (status, body) = http_status(&cp.metrics_url(path)).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert!(body.contains("database or disk is full"), "{body}");
    }
    assert_eq!(http_status(&cp.metrics_url("/livez")).await.0, 200, "the process itself is alive");
    let metrics = http_status(&cp.metrics_url("/metrics")).await.1;
    assert!(metrics.contains("aurora_controlplane_store_writable 0\n"), "{metrics}");

    std::fs::remove_file(filler).unwrap();
    // The very next revocation works (no restart) and reaches the data plane.
    let revoked = cp.cli(&["keys", "revoke", &id, "--wait"]).await;
    assert!(revoked.stderr.contains("applied by 1 data plane"), "{revoked:?}");
    assert_eq!(dp.call(&secret).await, 401);
    wait::until_async("healthz 200 again", || async {
        (http_status(&cp.metrics_url("/healthz")).await.0 == 200).then_some(())
    })
    .await;
    let logs = cp.process.logs();
    assert!(!logs.contains("non-zero transaction depth"), "{logs}");
}

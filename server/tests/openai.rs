//! Starts `kiln-server` on a free port with the default model and runs
//! `openai_client.py` against it: the official `openai` Python package as the client (installed
//! by `.ci/run`). A missing Python or package fails the test; only `KILN_SKIP_GPU_TESTS=1` skips it.
//! The server runs the adapter's own device plan whatever `KILN_PLAN` says: the HTTP layer is the
//! same under both, the engine test covers batching under both, and the GPU plan's kernels on a
//! CPU adapter take about 0.5 s a token, which would make this test's 200-request soak take most of
//! CI's time.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use kiln_runtime::testing::SKIP_VAR;

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn openai_client_against_the_server() {
    if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
        eprintln!("{SKIP_VAR}=1: skipping");
        return;
    }
    let name = "kiln-test-model";
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln-server"))
        .args(["--port", "0", "--model-name", name])
        .args(["--max-batch", "4", "--max-queue", "4", "--ctx-size", "256"])
        .env_remove("KILN_PLAN")
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting kiln-server");
    let stdout = child.stdout.take().expect("piped stdout");
    let server = Server(child);
    let mut lines = BufReader::new(stdout).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("kiln-server: listening on ")
                .map(str::to_string)
        })
        .expect("the server prints its address");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py");
    let status = Command::new("python3")
        .args([script, &url, name])
        .status()
        .expect("running python3 (with the `openai` package)");
    drop(server);
    assert!(status.success(), "openai_client.py failed: {status}");
}

//! deploy/kubernetes/ checked offline by `deploy/kubernetes/check.py`: the manifests against the
//! Kubernetes schemas (kubernetes-validate, from PyPI) and KEDA's CRD schemas, the kafka trigger
//! against what KEDA's scaler reads, the objects against each other, and the pod's
//! configuration through this build's `ktransform run --print-config`; then the check's own
//! self-test (every way of breaking the manifests it knows is found). No cluster, no broker.
//!
//! The validator is a requirement of `make test` (`make k8s-tools`, which `make test` and CI
//! run first): without it this test fails rather than skips, so CI cannot go green unchecked.

use std::path::Path;
use std::process::Command;

#[test]
fn kubernetes_manifests_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("python3")
        .arg(root.join("deploy/kubernetes/check.py"))
        .args([
            "--ktransform",
            env!("CARGO_BIN_EXE_ktransform"),
            "--self-test",
        ])
        .current_dir(root)
        .output()
        .expect("run python3 deploy/kubernetes/check.py (is python3 installed?)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert_ne!(
        output.status.code(),
        Some(3),
        "the Kubernetes validator is missing: `make k8s-tools`\n{stderr}"
    );
    assert!(
        output.status.success(),
        "deploy/kubernetes/check.py found problems ({}):\n{stdout}\n{stderr}",
        output.status
    );
}

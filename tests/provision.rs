//! `regctl provision`, `status` and `teardown`, run as the real binary against a moto server
//! started per test on a loopback port. A small proxy (`tests/moto_shim.py`) sits in front of
//! moto to force IAM-propagation errors and to hold a request so regctl can be killed half-way;
//! what exists is checked independently, with boto3 straight against moto
//! (`tests/moto_check.py`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

use crate::util::moto::Shim;
use crate::util::require_tool;

const DOMAIN: &str = "registry.example.test";
const CIDR: &str = "198.51.100.7/32";
const BUCKET: &str = "regctl-registry-123456789012-us-east-1";
/// The EC2 key pair of the launched instances (each test's moto has it).
const KEY: &str = "regctl-test";
/// The key pairs each test's moto has: [`KEY`], and those README's example and the drift test
/// name.
const KEY_PAIRS: [&str; 3] = [KEY, "my-key", "other-key"];

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// A process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A moto server of one test, and a working directory for regctl (its state file lives there).
struct Moto {
    /// moto's own endpoint (for the independent checks).
    direct: String,
    _moto: crate::util::moto::Moto,
    dir: tempfile::TempDir,
}

impl Moto {
    /// Starts moto with the test key pairs ([`KEY_PAIRS`]), or returns `None` (locally) when it
    /// is not installed.
    fn start() -> Option<Moto> {
        if !require_tool("python3", "apt-get install python3") {
            return None;
        }
        let moto = crate::util::moto::Moto::start()?;
        let dir = tempfile::tempdir().expect("temporary directory");
        let moto = Moto { direct: moto.endpoint.clone(), _moto: moto, dir };
        let mut args = vec!["key-pairs"];
        args.extend(KEY_PAIRS);
        moto.check(&args);
        Some(moto)
    }

    /// Starts a shim in front of this moto with `args` (see `tests/moto_shim.py`).
    fn shim(&self, args: &[&str]) -> Shim {
        Shim::start(&self.direct, args)
    }

    /// Runs `python3 tests/moto_check.py` against moto directly and returns its stdout.
    fn check(&self, args: &[&str]) -> String {
        let out = Command::new("python3")
            .arg(tests_dir().join("moto_check.py"))
            .arg(&self.direct)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run moto_check.py");
        assert!(out.status.success(), "moto_check.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("UTF-8").trim().to_string()
    }

    /// Everything in moto that regctl could have made, as JSON.
    fn inventory(&self) -> Value {
        serde_json::from_str(&self.check(&["inventory"])).expect("inventory JSON")
    }

    /// A public hosted zone for [`DOMAIN`].
    fn zone(&self) -> String {
        self.check(&["zone", "example.test"])
    }
}

/// `regctl` with its environment pointed at `endpoint`, run in `dir`.
fn regctl_cmd(dir: &Path, endpoint: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regctl"));
    cmd.args(args)
        .current_dir(dir)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", dir.join("no-aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("no-aws-credentials"))
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("REGCTL_IAM_WAIT")
        .stdin(Stdio::null());
    cmd
}

/// Runs regctl to completion and returns its output.
fn regctl(dir: &Path, endpoint: &str, args: &[&str]) -> Output {
    regctl_cmd(dir, endpoint, args).output().expect("run regctl")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs regctl and asserts it succeeded; returns stdout + stderr.
fn ok(dir: &Path, endpoint: &str, args: &[&str]) -> String {
    let out = regctl(dir, endpoint, args);
    let t = text(&out);
    assert!(out.status.success(), "regctl {args:?} failed:\n{t}");
    t
}

/// `provision` of a launched instance with the usual domain, SSH CIDR and key pair, and `extra`.
fn provision_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["provision", "--domain", DOMAIN, "--ssh-cidr", CIDR, "--key-name", KEY];
    args.extend_from_slice(extra);
    args
}

/// The live (not terminated) instances of an inventory.
fn live_instances(inv: &Value) -> Vec<&Value> {
    inv["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .filter(|i| i["state"] != "terminated" && i["state"] != "shutting-down")
        .collect()
}

/// Asserts that nothing regctl makes is left (the bucket only when `bucket_gone`).
fn assert_nothing_left(inv: &Value, bucket_gone: bool) {
    for key in [
        "policies",
        "roles",
        "instance_profiles",
        "security_groups",
        "addresses",
        "records",
        "load_balancers",
        "listeners",
        "target_groups",
        "launch_templates",
        "auto_scaling_groups",
        "certificates",
    ] {
        assert_eq!(inv[key], serde_json::json!([]), "{key} left behind: {inv:#}");
    }
    assert!(live_instances(inv).is_empty(), "instances left running: {inv:#}");
    if bucket_gone {
        assert_eq!(inv["buckets"], serde_json::json!([]), "bucket left behind: {inv:#}");
    }
}

fn steps_of(summary: &Value) -> Vec<(String, String)> {
    summary["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (s["resource"].as_str().unwrap_or("").to_string(), s["action"].as_str().unwrap_or("").to_string())
        })
        .collect()
}

#[test]
fn provision_from_nothing_then_again_changes_nothing_and_a_new_cidr_converges() {
    let Some(moto) = Moto::start() else { return };
    let shim = moto.shim(&[]);
    let dir = moto.dir.path();
    moto.zone();

    // From nothing: every resource is created, and moto has them as asked.
    let out = ok(dir, &shim.endpoint, &provision_args(&["--output", "json"]));
    let first: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("JSON summary ({e}):\n{out}"));
    let steps = steps_of(&first);
    assert_eq!(steps.len(), 8, "{steps:?}");
    assert!(steps.iter().all(|(_, action)| action == "create"), "{steps:?}");
    let ip = first["public_ip"].as_str().expect("a public IP").to_string();

    let inv = moto.inventory();
    let bucket = &inv["buckets"][0];
    assert_eq!(bucket["name"], BUCKET);
    assert_eq!(bucket["versioning"], "Enabled");
    assert_eq!(bucket["tags"]["regctl:deployment"], "registry");
    assert_eq!(bucket["lifecycle"][0]["NoncurrentVersionExpiration"]["NoncurrentDays"], 30);
    assert_eq!(bucket["lifecycle"][0]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"], 7);
    assert_eq!(bucket["public_access_block"]["BlockPublicPolicy"], true);
    let policy = &inv["policies"][0];
    assert_eq!(policy["name"], "regctl-registry-s3");
    assert!(policy["document"].to_string().contains(&format!("arn:aws:s3:::{BUCKET}/*")), "{policy}");
    assert_eq!(inv["roles"][0]["name"], "regctl-registry-ec2");
    assert_eq!(inv["roles"][0]["attached"][0], "arn:aws:iam::123456789012:policy/regctl-registry-s3");
    assert_eq!(inv["instance_profiles"][0]["roles"], serde_json::json!(["regctl-registry-ec2"]));
    let group = &inv["security_groups"][0];
    assert_eq!(
        group["rules"],
        serde_json::json!([format!("tcp 22-22 {CIDR}"), "tcp 443-443 0.0.0.0/0", "tcp 80-80 0.0.0.0/0"])
    );
    assert!(group["egress_rules"].as_u64().unwrap_or(0) >= 1, "default egress kept: {group}");
    let instances = live_instances(&inv);
    assert_eq!(instances.len(), 1, "{inv:#}");
    assert_eq!(instances[0]["state"], "running");
    assert_eq!(instances[0]["tags"]["regctl:launched"], "true");
    assert_eq!(instances[0]["groups"], serde_json::json!(["regctl-registry"]));
    assert!(instances[0]["profile"][0].as_str().unwrap_or("").ends_with("instance-profile/regctl-registry"));
    assert_eq!(
        inv["records"],
        serde_json::json!([{"name": format!("{DOMAIN}."), "type": "A", "ttl": 60, "values": [ip]}])
    );
    assert!(dir.join("regctl.toml").exists(), "settings recorded");

    // Again, with no flags (the settings come from regctl.toml): nothing changes.
    let again = ok(dir, &shim.endpoint, &["provision"]);
    assert_eq!(again.matches(": up to date (").count(), 8, "{again}");
    assert!(!again.contains("created") && !again.contains("updated"), "{again}");
    assert!(again.contains("no changes"), "{again}");
    assert_eq!(moto.inventory(), inv, "a second provision changed something");

    // A dry run of a new SSH CIDR shows the change and makes none.
    let dry = ok(dir, &shim.endpoint, &["provision", "--ssh-cidr", "203.0.113.0/24", "--dry-run"]);
    assert!(
        dry.contains("would update: allow tcp 22 from 203.0.113.0/24; revoke tcp 22 from 198.51.100.7/32"),
        "{dry}"
    );
    assert_eq!(moto.inventory(), inv, "--dry-run changed something");

    // The new CIDR converges: the old rule is gone, the new one there once.
    let changed = ok(dir, &shim.endpoint, &["provision", "--ssh-cidr", "203.0.113.9/24"]);
    assert!(changed.contains("SSH (port 22) allowed from 203.0.113.0/24 (from --ssh-cidr)"), "{changed}");
    let rules = moto.inventory()["security_groups"][0]["rules"].clone();
    assert_eq!(
        rules,
        serde_json::json!(["tcp 22-22 203.0.113.0/24", "tcp 443-443 0.0.0.0/0", "tcp 80-80 0.0.0.0/0"])
    );
    let settled = ok(dir, &shim.endpoint, &["provision"]);
    assert_eq!(settled.matches(": up to date (").count(), 8, "{settled}");

    // status agrees, in JSON.
    let status: Value =
        serde_json::from_str(&ok(dir, &shim.endpoint, &["status", "--output", "json"])).expect("status JSON");
    let statuses: Vec<&str> = status["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["status"].as_str())
        .collect();
    assert_eq!(statuses, ["ok"; 8], "{status:#}");
    assert_eq!(status["instance"]["state"], "running");
    assert!(status["probe_skipped"].is_string(), "no DNS/HTTPS probe against an emulator: {status:#}");

    // Teardown removes everything, bucket included when asked.
    let down = ok(dir, &shim.endpoint, &["teardown", "--yes", "--delete-bucket"]);
    assert!(down.contains("teardown complete"), "{down}");
    assert_nothing_left(&moto.inventory(), true);
    assert!(!dir.join("regctl.toml").exists(), "the state entry is forgotten");
    let after: Value =
        serde_json::from_str(&ok(dir, &shim.endpoint, &["status", "--output", "json"])).expect("status JSON");
    assert_eq!(after["resources"], serde_json::json!([]), "{after:#}");
}

#[test]
fn dry_run_from_nothing_mutates_nothing_and_required_settings_are_asked_for() {
    let Some(moto) = Moto::start() else { return };
    let shim = moto.shim(&[]);
    let dir = moto.dir.path();
    moto.zone();
    let before = moto.inventory();
    let out = ok(dir, &shim.endpoint, &provision_args(&["--dry-run"]));
    assert_eq!(out.matches("would create").count(), 8, "{out}");
    assert_eq!(moto.inventory(), before, "--dry-run changed something");
    assert!(!dir.join("regctl.toml").exists(), "a dry run records nothing");

    let no_cidr = regctl(dir, &shim.endpoint, &["provision", "--domain", DOMAIN, "--key-name", KEY]);
    assert!(!no_cidr.status.success());
    assert!(text(&no_cidr).contains("--ssh-cidr"), "{}", text(&no_cidr));
    let no_zone = regctl(
        dir,
        &shim.endpoint,
        &["provision", "--domain", "registry.other.test", "--ssh-cidr", CIDR, "--key-name", KEY],
    );
    assert!(!no_zone.status.success());
    assert!(text(&no_zone).contains("--hosted-zone-id"), "{}", text(&no_zone));
    assert_eq!(moto.inventory(), before, "a refused provision changed something");
}

#[test]
fn teardown_from_tags_alone_after_a_provision_killed_half_way() {
    let Some(moto) = Moto::start() else { return };
    let dir = moto.dir.path();
    moto.zone();
    // Hold CreateSecurityGroup: by then the bucket and the IAM resources exist.
    let mut hanging = moto.shim(&["--hang", "CreateSecurityGroup"]);
    let mut child = Proc(
        regctl_cmd(dir, &hanging.endpoint, &provision_args(&[]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start regctl provision"),
    );
    hanging.wait_for("HANG CreateSecurityGroup");
    child.0.kill().expect("kill regctl");
    let _ = child.0.wait();
    drop(hanging);

    let inv = moto.inventory();
    assert_eq!(inv["roles"].as_array().map(Vec::len), Some(1), "{inv:#}");
    assert_eq!(inv["security_groups"], serde_json::json!([]), "{inv:#}");

    // No state file: teardown finds everything from tags and derived names.
    std::fs::remove_file(dir.join("regctl.toml")).expect("the killed run recorded its settings");
    let shim = moto.shim(&[]);
    let status = ok(dir, &shim.endpoint, &["status"]);
    assert!(status.contains("compared with tags"), "{status}");
    assert!(status.contains("present  IAM role regctl-registry-ec2"), "{status}");
    let down = ok(dir, &shim.endpoint, &["teardown", "--yes", "--delete-bucket"]);
    for removed in ["IAM instance profile", "IAM role", "IAM policy", "S3 bucket"] {
        assert!(down.lines().any(|l| l.starts_with(removed) && l.contains("removed")), "{removed}: {down}");
    }
    assert_nothing_left(&moto.inventory(), true);
}

#[test]
fn teardown_keeps_going_past_failures_reports_them_and_resumes() {
    let Some(moto) = Moto::start() else { return };
    let dir = moto.dir.path();
    moto.zone();
    let shim = moto.shim(&[]);
    ok(dir, &shim.endpoint, &provision_args(&[]));

    // DeleteRole is refused: everything else still goes, the failure is reported, exit non-zero.
    let failing = moto.shim(&["--fail", "DeleteRole=100:AccessDenied"]);
    let out = regctl(dir, &failing.endpoint, &["teardown", "--yes", "--delete-bucket"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("teardown left 1 resource(s) behind"), "{t}");
    assert!(t.contains("iam:DeleteRole on IAM role regctl-registry-ec2 failed (AccessDenied)"), "{t}");
    assert!(t.contains("lack the `iam:DeleteRole` permission"), "{t}");
    let inv = moto.inventory();
    assert_eq!(inv["roles"].as_array().map(Vec::len), Some(1), "{inv:#}");
    assert_eq!(inv["policies"], serde_json::json!([]), "the policy after the role still went: {inv:#}");
    assert_eq!(inv["buckets"], serde_json::json!([]), "{inv:#}");
    assert!(dir.join("regctl.toml").exists(), "kept for the next run");

    // The next run finishes the job.
    let again = ok(dir, &shim.endpoint, &["teardown", "--yes"]);
    assert!(again.contains("IAM role regctl-registry-ec2: removed"), "{again}");
    assert_nothing_left(&moto.inventory(), true);
    let nothing = ok(dir, &shim.endpoint, &["teardown", "--yes"]);
    assert!(nothing.contains("nothing of deployment registry found"), "{nothing}");
}

#[test]
fn versioned_bucket_is_kept_without_delete_bucket_and_emptied_with_it() {
    let Some(moto) = Moto::start() else { return };
    let dir = moto.dir.path();
    moto.zone();
    let shim = moto.shim(&[]);
    ok(dir, &shim.endpoint, &provision_args(&[]));
    // More than one DeleteObjects batch (1000 keys), several versions and delete markers.
    let filled = moto.check(&["fill", BUCKET, "1005"]);
    assert_eq!(filled, "1009 3");

    let kept = ok(dir, &shim.endpoint, &["teardown", "--yes"]);
    assert!(kept.contains("kept: holds the images"), "{kept}");
    assert_eq!(moto.check(&["versions", BUCKET]), "1009 3", "the images were touched");
    assert_nothing_left(&moto.inventory(), false);

    let deleted = ok(dir, &shim.endpoint, &["teardown", "--yes", "--delete-bucket"]);
    assert!(deleted.contains("1009 object versions, 3 delete markers"), "{deleted}");
    assert_eq!(moto.check(&["versions", BUCKET]), "absent");
    assert_nothing_left(&moto.inventory(), true);
}

#[test]
fn iam_propagation_errors_are_retried_and_give_up_with_advice() {
    let Some(moto) = Moto::start() else { return };
    let dir = moto.dir.path();
    moto.zone();
    // The first three associations fail as they do while IAM propagates a new profile.
    let mut flaky = moto.shim(&["--fail", "AssociateIamInstanceProfile=3"]);
    let out = ok(dir, &flaky.endpoint, &provision_args(&["--iam-wait", "60"]));
    assert_eq!(out.matches("IAM has not propagated the instance profile yet").count(), 3, "{out}");
    assert!(out.contains("instance profile association") && out.contains(": created"), "{out}");
    for _ in 0..3 {
        assert_eq!(flaky.next_line(), "FAILED AssociateIamInstanceProfile");
    }
    let inv = moto.inventory();
    assert!(
        live_instances(&inv)[0]["profile"][0].as_str().unwrap_or("").ends_with("/regctl-registry"),
        "{inv:#}"
    );

    // When it never propagates within the wait (here set through REGCTL_IAM_WAIT), regctl says
    // what happened and what to do.
    let other = tempfile::tempdir().expect("tempdir");
    let stuck = moto.shim(&["--fail", "AssociateIamInstanceProfile=1000"]);
    let out = regctl_cmd(other.path(), &stuck.endpoint, &provision_args(&["--name", "stuck"]))
        .env("REGCTL_IAM_WAIT", "2")
        .output()
        .expect("run regctl");
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("ec2:AssociateIamInstanceProfile on instance profile association of i-"), "{t}");
    assert!(t.contains("(InvalidParameterValue)") && t.contains("--iam-wait"), "{t}");
}

#[test]
fn an_existing_instance_is_adopted_and_never_terminated() {
    let Some(moto) = Moto::start() else { return };
    let dir = moto.dir.path();
    moto.zone();
    let shim = moto.shim(&[]);
    let id = moto.check(&["instance"]);
    let out =
        ok(dir, &shim.endpoint, &["provision", "--domain", DOMAIN, "--ssh-cidr", CIDR, "--instance-id", &id]);
    assert!(out.contains(&format!("instance {id}: updated")), "{out}");
    let inv = moto.inventory();
    let instances = live_instances(&inv);
    assert_eq!(instances.len(), 1, "no second instance launched: {inv:#}");
    assert_eq!(instances[0]["tags"]["regctl:deployment"], "registry");
    assert!(
        instances[0]["groups"].as_array().expect("groups").contains(&"regctl-registry".into()),
        "{inv:#}"
    );
    let again = ok(dir, &shim.endpoint, &["provision"]);
    assert_eq!(again.matches(": up to date (").count(), 8, "{again}");

    let down = ok(dir, &shim.endpoint, &["teardown", "--yes", "--delete-bucket"]);
    assert!(down.contains("not launched by regctl"), "{down}");
    let inv = moto.inventory();
    let instances = live_instances(&inv);
    assert_eq!(instances.len(), 1, "the adopted instance must survive teardown: {inv:#}");
    assert_eq!(instances[0]["id"], id.as_str());
    assert_eq!(instances[0]["tags"].get("regctl:deployment"), None, "{inv:#}");
    assert!(
        !instances[0]["groups"].as_array().expect("groups").contains(&"regctl-registry".into()),
        "{inv:#}"
    );
    assert_eq!(inv["security_groups"], serde_json::json!([]), "{inv:#}");
}

#[test]
fn an_elastic_ip_and_a_new_domain_are_converged() {
    let Some(moto) = Moto::start() else { return };
    let dir = moto.dir.path();
    moto.zone();
    let shim = moto.shim(&[]);
    ok(dir, &shim.endpoint, &provision_args(&[]));

    // An Elastic IP on request: the record follows it; a re-run leaves it alone.
    let out = ok(dir, &shim.endpoint, &["provision", "--elastic-ip"]);
    assert!(out.contains("Elastic IP (new): created"), "{out}");
    let inv = moto.inventory();
    let eip = inv["addresses"][0]["ip"].as_str().expect("an Elastic IP").to_string();
    assert_eq!(inv["addresses"][0]["instance"], live_instances(&inv)[0]["id"]);
    assert_eq!(inv["records"][0]["values"], serde_json::json!([eip]));
    let again = ok(dir, &shim.endpoint, &["provision"]);
    assert_eq!(again.matches(": up to date (").count(), 9, "{again}");

    // Released on request: the record points at the instance's own address again.
    let out = ok(dir, &shim.endpoint, &["provision", "--no-elastic-ip"]);
    assert!(out.contains(": removed"), "{out}");
    let inv = moto.inventory();
    assert_eq!(inv["addresses"], serde_json::json!([]), "{inv:#}");
    assert_eq!(inv["records"][0]["values"][0], live_instances(&inv)[0]["public_ip"], "{inv:#}");

    // Another name: its record is made and the former one removed.
    let out = ok(dir, &shim.endpoint, &["provision", "--domain", "cr.example.test"]);
    assert!(out.contains("remove the record of the former name registry.example.test"), "{out}");
    let records = moto.inventory()["records"].clone();
    assert_eq!(records.as_array().map(Vec::len), Some(1), "{records:#}");
    assert_eq!(records[0]["name"], "cr.example.test.");
    let again = ok(dir, &shim.endpoint, &["provision"]);
    assert_eq!(again.matches(": up to date (").count(), 8, "{again}");

    ok(dir, &shim.endpoint, &["teardown", "--yes", "--delete-bucket"]);
    assert_nothing_left(&moto.inventory(), true);
}

/// Runs regctl with `args` through a shim that lets the first change through to moto and
/// then holds its answer, and kills regctl (SIGKILL) there: the change is made, regctl never
/// learns it. Returns the action it died after, or `None` when the run changed nothing and
/// finished (successfully: that is asserted).
fn kill_after_first_change(moto: &Moto, dir: &Path, args: &[&str]) -> Option<String> {
    let mut shim = moto.shim(&["--hang-after-first-change"]);
    let mut child = Proc(
        regctl_cmd(dir, &shim.endpoint, args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start regctl"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        if let Some(action) = shim
            .try_line(std::time::Duration::from_millis(100))
            .and_then(|line| line.strip_prefix("HANG ").map(str::to_string))
        {
            child.0.kill().expect("kill regctl");
            let _ = child.0.wait();
            return Some(action);
        }
        if let Some(status) = child.0.try_wait().expect("regctl's status") {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            assert!(status.success(), "regctl {args:?}: {stderr}");
            return None;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "regctl {args:?} neither changed something nor finished"
        );
    }
}

/// Asserts that nothing regctl makes exists twice, for a deployment of `instances` instances
/// (a scaled one has two security groups, a validation record besides the A record, and two
/// listeners).
fn assert_no_duplicates(inv: &Value, after: &str, instances: usize) {
    let scaled = instances > 1;
    for key in [
        "buckets",
        "policies",
        "roles",
        "instance_profiles",
        "security_groups",
        "addresses",
        "records",
        "load_balancers",
        "listeners",
        "target_groups",
        "launch_templates",
        "auto_scaling_groups",
        "certificates",
    ] {
        let most = match key {
            "security_groups" | "records" | "listeners" if scaled => 2,
            _ => 1,
        };
        let n = inv[key].as_array().map_or(0, Vec::len);
        assert!(n <= most, "{n} {key} after a kill after {after}: {inv:#}");
    }
    let n = live_instances(inv).len();
    assert!(n <= instances, "{n} instances after a kill after {after}: {inv:#}");
    for policy in inv["policies"].as_array().into_iter().flatten() {
        assert_eq!(policy["versions"], 1, "policy versions piled up after {after}: {inv:#}");
    }
    for template in inv["launch_templates"].as_array().into_iter().flatten() {
        assert_eq!(template["versions"], 1, "launch template versions piled up after {after}: {inv:#}");
    }
}

/// Kills `args` (for a deployment of `instances` instances) after each change it makes, one run
/// per change, until a run changes nothing; returns the changes in the order they were made.
fn kill_after_each_change(moto: &Moto, args: &[&str], instances: usize) -> Vec<String> {
    let mut died_after = Vec::new();
    while let Some(action) = kill_after_first_change(moto, moto.dir.path(), args) {
        assert_no_duplicates(&moto.inventory(), &action, instances);
        died_after.push(action);
        assert!(died_after.len() <= 60, "regctl {args:?} never stops changing things: {died_after:?}");
    }
    died_after
}

#[test]
fn provision_and_teardown_killed_after_each_change_converge_with_no_duplicate_or_orphan() {
    let Some(moto) = Moto::start() else { return };
    let dir = moto.dir.path();
    moto.zone();

    let provision = provision_args(&[]);
    let made = kill_after_each_change(&moto, &provision, 1);
    for step in [
        "CreateBucket",
        "PutBucketVersioning",
        "PutPublicAccessBlock",
        "CreatePolicy",
        "CreateRole",
        "AttachRolePolicy",
        "CreateInstanceProfile",
        "AddRoleToInstanceProfile",
        "CreateSecurityGroup",
        "AuthorizeSecurityGroupIngress",
        "RunInstances",
        "AssociateIamInstanceProfile",
        "ChangeResourceRecordSets",
    ] {
        assert!(made.iter().any(|a| a == step), "provision was never killed right after {step}: {made:?}");
    }
    // What the interrupted runs built is what one run builds: a run now changes nothing.
    let shim = moto.shim(&[]);
    let again = ok(dir, &shim.endpoint, &["provision"]);
    assert_eq!(again.matches(": up to date (").count(), 8, "{again}");
    let inv = moto.inventory();
    for key in ["buckets", "policies", "roles", "instance_profiles", "security_groups", "records"] {
        assert_eq!(inv[key].as_array().map(Vec::len), Some(1), "{key}: {inv:#}");
    }
    assert_eq!(live_instances(&inv).len(), 1, "{inv:#}");
    assert_eq!(inv["instance_profiles"][0]["roles"], serde_json::json!(["regctl-registry-ec2"]));
    assert!(
        live_instances(&inv)[0]["profile"][0]
            .as_str()
            .unwrap_or("")
            .ends_with("instance-profile/regctl-registry"),
        "{inv:#}"
    );
    // The defences SECURITY.md lists, as moto holds them.
    let bucket = &inv["buckets"][0];
    for setting in ["BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"] {
        assert_eq!(bucket["public_access_block"][setting], true, "{setting}: {bucket:#}");
    }
    assert_eq!(bucket["encryption"], serde_json::json!(["AES256"]), "{bucket:#}");
    assert_eq!(live_instances(&inv)[0]["metadata_tokens"], "required", "IMDSv2 only: {inv:#}");
    assert_eq!(moto.check(&["fill", BUCKET, "3"]), "7 3");

    let removed = kill_after_each_change(&moto, &["teardown", "--yes", "--delete-bucket"], 1);
    for step in [
        "ChangeResourceRecordSets",
        "DisassociateIamInstanceProfile",
        "TerminateInstances",
        "DeleteSecurityGroup",
        "DeleteInstanceProfile",
        "DeleteRole",
        "DeletePolicy",
        "DeleteBucket",
    ] {
        assert!(
            removed.iter().any(|a| a == step),
            "teardown was never killed right after {step}: {removed:?}"
        );
    }
    assert_nothing_left(&moto.inventory(), true);
    assert!(!dir.join("regctl.toml").exists(), "the state entry is forgotten");
    eprintln!(
        "provision killed after each of its {} changes and re-run: {made:?}; teardown after each of its {}: \
         {removed:?}",
        made.len(),
        removed.len()
    );
}

/// The lines the shim printed so far that start with `prefix`, waiting up to 2 s for each.
fn shim_lines(shim: &mut Shim, prefix: &str) -> Vec<String> {
    std::iter::from_fn(|| shim.try_line(std::time::Duration::from_secs(2)))
        .filter(|l| l.starts_with(prefix))
        .collect()
}

#[test]
fn ec2_resources_not_found_right_after_their_creation_are_waited_for() {
    let Some(moto) = Moto::start() else { return };
    let dir = moto.dir.path();
    moto.zone();
    // EC2 is eventually consistent: the new group and instance are "not found" for a while.
    let mut shim = moto.shim(&[
        "--not-found-after-create",
        "AuthorizeSecurityGroupIngress=2",
        "--not-found-after-create",
        "DescribeInstances=3",
    ]);
    let out = ok(dir, &shim.endpoint, &provision_args(&[]));
    assert!(out.contains("not visible yet (InvalidGroup.NotFound)"), "{out}");
    assert!(out.contains("not visible yet (InvalidInstanceID.NotFound)"), "{out}");
    let delayed = shim_lines(&mut shim, "NOTFOUND ");
    assert_eq!(delayed.len(), 5, "{delayed:?}");
    let inv = moto.inventory();
    assert_eq!(inv["security_groups"][0]["rules"].as_array().map(Vec::len), Some(3), "{inv:#}");
    assert_eq!(live_instances(&inv).len(), 1, "{inv:#}");
    assert_eq!(live_instances(&inv)[0]["state"], "running");
}

#[test]
fn s3_and_iam_not_found_right_after_their_creation_are_retried() {
    let Some(moto) = Moto::start() else { return };
    let dir = moto.dir.path();
    moto.zone();
    // The new bucket, role and policy are "not found" for a while by the calls that follow.
    let mut shim = moto.shim(&[
        "--not-found-after-create",
        "PutBucketVersioning=2",
        "--not-found-after-create",
        "PutBucketLifecycle=1",
        "--not-found-after-create",
        "AttachRolePolicy=2",
        "--not-found-after-create",
        "AddRoleToInstanceProfile=2",
    ]);
    let out = ok(dir, &shim.endpoint, &provision_args(&[]));
    for code in ["NoSuchBucket", "NoSuchEntity"] {
        assert!(out.contains(&format!("not visible yet ({code})")), "{code}: {out}");
    }
    let delayed = shim_lines(&mut shim, "NOTFOUND ");
    assert_eq!(delayed.len(), 7, "{delayed:?}");
    let inv = moto.inventory();
    let bucket = &inv["buckets"][0];
    assert_eq!(bucket["versioning"], "Enabled", "{bucket:#}");
    assert!(bucket["lifecycle"].is_array(), "{bucket:#}");
    assert_eq!(inv["roles"][0]["attached"][0], "arn:aws:iam::123456789012:policy/regctl-registry-s3");
    assert_eq!(inv["instance_profiles"][0]["roles"], serde_json::json!(["regctl-registry-ec2"]));
}

#[test]
fn a_group_that_already_has_one_of_the_rules_gets_the_others() {
    let Some(moto) = Moto::start() else { return };
    let dir = moto.dir.path();
    moto.zone();
    let shim = moto.shim(&[]);
    ok(dir, &shim.endpoint, &provision_args(&[]));
    // The group keeps only its SSH rule; the next run reads the group before EC2 shows even that
    // one, so it asks for all three at once, and AWS rejects the whole batch as a duplicate.
    moto.check(&["revoke", "regctl-registry", "80", "443"]);
    let mut stale = moto.shim(&["--stale-read", "DescribeSecurityGroups=1"]);
    ok(dir, &stale.endpoint, &["provision"]);
    assert_eq!(shim_lines(&mut stale, "STALE "), ["STALE DescribeSecurityGroups"]);
    assert_eq!(
        moto.inventory()["security_groups"][0]["rules"],
        serde_json::json!([format!("tcp 22-22 {CIDR}"), "tcp 443-443 0.0.0.0/0", "tcp 80-80 0.0.0.0/0"])
    );
}

#[test]
fn delete_markers_expire_and_a_rule_without_it_is_drift() {
    let Some(moto) = Moto::start() else { return };
    let dir = moto.dir.path();
    moto.zone();
    let shim = moto.shim(&[]);
    ok(dir, &shim.endpoint, &provision_args(&[]));
    let rule = moto.inventory()["buckets"][0]["lifecycle"][0].clone();
    assert_eq!(rule["Expiration"]["ExpiredObjectDeleteMarker"], true, "{rule:#}");

    // The rule of an older regctl: status calls it drift, provision converges it.
    moto.check(&["old-lifecycle", BUCKET]);
    // Drift is reported in full, and decides the exit status (5, README "Exit status").
    let out = regctl(dir, &shim.endpoint, &["status", "--output", "json"]);
    assert_eq!(out.status.code(), Some(5), "status with drift:\n{}", text(&out));
    let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let bucket = status["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["resource"] == "S3 bucket")
        .expect("the bucket's status")
        .clone();
    assert_eq!(bucket["status"], "drifted", "{status:#}");
    assert!(bucket["changes"][0].as_str().unwrap_or("").contains("expired delete markers"), "{bucket:#}");
    ok(dir, &shim.endpoint, &["provision"]);
    let rule = moto.inventory()["buckets"][0]["lifecycle"][0].clone();
    assert_eq!(rule["Expiration"]["ExpiredObjectDeleteMarker"], true, "{rule:#}");
    assert_eq!(rule["NoncurrentVersionExpiration"]["NoncurrentDays"], 30, "{rule:#}");
}

#[test]
fn a_bucket_of_another_region_is_not_the_deployments_here() {
    let Some(moto) = Moto::start() else { return };
    let dir = moto.dir.path();
    moto.zone();
    let shim = moto.shim(&[]);
    ok(dir, &shim.endpoint, &provision_args(&[]));
    // The same deployment name in another region: its bucket is that region's business.
    moto.check(&["bucket", "regctl-registry-elsewhere", "eu-west-1", "registry"]);
    std::fs::remove_file(dir.join("regctl.toml")).expect("state file");
    let status: Value =
        serde_json::from_str(&ok(dir, &shim.endpoint, &["status", "--output", "json"])).expect("status JSON");
    let buckets: Vec<&Value> = status["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter(|r| r["resource"] == "S3 bucket")
        .map(|r| &r["name"])
        .collect();
    assert_eq!(buckets, [BUCKET], "{status:#}");
}

#[test]
fn an_sso_profile_without_a_login_is_told_to_run_aws_sso_login() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("aws-config");
    std::fs::write(
        &config,
        "[profile corp]\nsso_session = corp\nsso_account_id = 123456789012\nsso_role_name = Admin\n\
         region = us-east-1\n\n[sso-session corp]\nsso_start_url = https://example.awsapps.com/start\n\
         sso_region = us-east-1\nsso_registration_scopes = sso:account:access\n",
    )
    .expect("write the AWS config");
    // No SSO token in the (empty) home's cache: the profile needs `aws sso login` first. Nothing
    // listens at the endpoint: the credentials fail before any call.
    let out = regctl_cmd(dir.path(), "http://127.0.0.1:9", &["status", "--no-probe", "--profile", "corp"])
        .env("AWS_CONFIG_FILE", &config)
        .env("HOME", dir.path())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .expect("run regctl");
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("aws sso login --profile corp"), "{t}");
    assert!(!t.contains("cargo feature"), "built without SSO support: {t}");
    assert!(!t.contains("check the network"), "{t}");
}

#[test]
fn a_dns_record_pointing_elsewhere_is_replaced_only_with_yes_and_never_deleted() {
    let Some(moto) = Moto::start() else { return };
    let dir = moto.dir.path();
    moto.zone();
    let shim = moto.shim(&[]);
    // The name already serves something else: provision refuses to take it over.
    moto.check(&["record", DOMAIN, "192.0.2.99"]);
    let refused = regctl(dir, &shim.endpoint, &provision_args(&[]));
    let t = text(&refused);
    assert!(!refused.status.success(), "{t}");
    assert!(t.contains("points at 192.0.2.99, not at this deployment's") && t.contains("--yes"), "{t}");
    assert_eq!(moto.inventory()["records"][0]["values"], serde_json::json!(["192.0.2.99"]));

    // With --yes it does; the next run without it is content (the record is the deployment's).
    ok(dir, &shim.endpoint, &["provision", "--yes"]);
    let inv = moto.inventory();
    let ip = live_instances(&inv)[0]["public_ip"].clone();
    assert_eq!(inv["records"][0]["values"], serde_json::json!([ip]), "{inv:#}");
    let again = ok(dir, &shim.endpoint, &["provision"]);
    assert_eq!(again.matches(": up to date (").count(), 8, "{again}");

    // Pointed elsewhere again by someone else: teardown leaves it alone and says so.
    moto.check(&["record", DOMAIN, "192.0.2.99"]);
    let down = ok(dir, &shim.endpoint, &["teardown", "--yes", "--delete-bucket"]);
    assert!(down.contains("kept: points at 192.0.2.99, not at this deployment's address"), "{down}");
    let inv = moto.inventory();
    assert_eq!(inv["records"][0]["values"], serde_json::json!(["192.0.2.99"]), "{inv:#}");
    assert!(live_instances(&inv).is_empty(), "{inv:#}");
}

#[test]
fn the_amazon_linux_image_is_found_by_the_amazon_owner_alias() {
    let Some(moto) = Moto::start() else { return };
    let dir = moto.dir.path();
    moto.zone();
    // In an opt-in region Amazon's images belong to another account than in the older regions.
    let mut shim = moto.shim(&["--amazon-images-elsewhere"]);
    let made = ok(dir, &shim.endpoint, &provision_args(&[]));
    assert!(made.contains("instance (new t3.small): created"), "{made}");
    assert_eq!(shim_lines(&mut shim, "NOIMAGES "), Vec::<String>::new(), "an owner asked for by account ID");
    assert_eq!(live_instances(&moto.inventory()).len(), 1);
}

#[test]
fn deploy_reads_the_latest_console_output_for_the_host_keys() {
    let Some(moto) = Moto::start() else { return };
    let dir = moto.dir.path();
    moto.zone();
    let shim = moto.shim(&[]);
    ok(dir, &shim.endpoint, &provision_args(&[]));
    // The console output buffered at boot is empty; the latest one has cloud-init's block.
    let mut console = moto.shim(&["--console-output-latest-only"]);
    let known_hosts = dir.join("known_hosts");
    let known_hosts = known_hosts.to_str().expect("UTF-8 path");
    let out = regctl_cmd(dir, &console.endpoint, &["deploy", "--known-hosts", known_hosts])
        .env("HOME", dir)
        .output()
        .expect("run regctl deploy");
    let t = text(&out);
    assert!(t.contains("The instance printed 2 host key fingerprint(s) to its console (read after"), "{t}");
    assert_eq!(shim_lines(&mut console, "CONSOLE "), ["CONSOLE latest=True"]);
}

#[test]
fn the_instance_is_launched_in_a_zone_that_offers_its_type() {
    let Some(moto) = Moto::start() else { return };
    let dir = moto.dir.path();
    moto.zone();
    // The first zone (by name) does not offer t3.small in this account.
    let shim = moto.shim(&["--type-not-offered-in", "us-east-1a"]);
    let out = ok(dir, &shim.endpoint, &provision_args(&[]));
    assert!(out.contains("the first zone of the default VPC that offers t3.small"), "{out}");
    let inv = moto.inventory();
    let zone = live_instances(&inv)[0]["zone"].as_str().unwrap_or("").to_string();
    assert!(zone.starts_with("us-east-1") && zone != "us-east-1a", "{inv:#}");
    assert!(out.contains(&format!(" in {zone}: ")), "{out}");
}

/// The first `regctl provision` command of README.md, as its arguments, with the address that
/// `curl checkip` would give replaced by [`CIDR`].
fn readme_provision() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README");
    let start = readme.find("\nregctl provision ").expect("a provision example in README.md") + 1;
    let mut command = String::new();
    for line in readme[start..].lines() {
        command.push_str(line.trim_end_matches('\\'));
        if !line.ends_with('\\') {
            break;
        }
    }
    let curl = command.find("\"$(curl").expect("the address from checkip in README's example");
    let end = curl + 1 + command[curl + 1..].find('"').expect("a closing quote");
    command.replace_range(curl..=end, CIDR);
    command.split_whitespace().skip(1).map(str::to_string).collect()
}

#[test]
fn a_launch_needs_a_key_pair_and_another_key_is_drift() {
    let Some(moto) = Moto::start() else { return };
    let dir = moto.dir.path();
    moto.check(&["zone", "example.com"]);
    let shim = moto.shim(&[]);
    let before = moto.inventory();

    // No key pair and no word that the user brings their own access: nothing is made.
    let args = readme_provision();
    let no_key: Vec<&str> =
        args.iter().map(String::as_str).filter(|a| *a != "--key-name" && *a != "my-key").collect();
    assert_eq!(no_key.len(), args.len() - 2, "README's example names --key-name my-key: {args:?}");
    let refused = regctl(dir, &shim.endpoint, &no_key);
    let t = text(&refused);
    assert!(!refused.status.success(), "{t}");
    assert!(t.contains("--key-name NAME") && t.contains("--no-ssh-key"), "{t}");
    assert_eq!(moto.inventory(), before, "a refused provision changed something");

    // README's first example, as written: the instance has the key, and it is recorded.
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(dir, &shim.endpoint, &args);
    let inv = moto.inventory();
    assert_eq!(live_instances(&inv)[0]["key_name"], "my-key", "{inv:#}");
    let recorded = std::fs::read_to_string(dir.join("regctl.toml")).expect("state file");
    assert!(recorded.contains("key_name = \"my-key\""), "{recorded}");

    // Another key is drift that provision cannot fix in place: it says so, and changes nothing.
    let dry = ok(dir, &shim.endpoint, &["provision", "--no-ssh-key", "--dry-run"]);
    assert!(dry.contains("would update: key pair my-key instead of no key pair"), "{dry}");
    let other = regctl(dir, &shim.endpoint, &["provision", "--key-name", "other-key"]);
    let t = text(&other);
    assert!(!other.status.success(), "{t}");
    assert!(
        t.contains("has key pair my-key instead of key pair other-key") && t.contains("--key-name my-key"),
        "{t}"
    );
    assert_eq!(live_instances(&moto.inventory()).len(), 1);
    // status compares with the recorded key (other-key, recorded by the refused run); drift
    // exits 5.
    let out = regctl(dir, &shim.endpoint, &["status", "--output", "json"]);
    assert_eq!(out.status.code(), Some(5), "status with drift:\n{}", text(&out));
    let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let instance = status["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["resource"] == "instance")
        .expect("the instance's status")
        .clone();
    assert_eq!(instance["status"], "drifted", "{status:#}");
    assert!(
        instance["changes"][0]
            .as_str()
            .unwrap_or("")
            .contains("key pair my-key instead of key pair other-key"),
        "{instance:#}"
    );
    // The key it has is content again.
    let again = ok(dir, &shim.endpoint, &["provision", "--key-name", "my-key"]);
    assert!(again.contains("no changes"), "{again}");
}

/// A mistyped `--key-name` is refused while planning, naming the region and the key pairs it
/// has, before anything is made (EC2 would refuse it only at RunInstances, after the bucket,
/// IAM and security group).
#[test]
fn a_key_pair_that_does_not_exist_is_refused_before_any_change() {
    let Some(moto) = Moto::start() else { return };
    let dir = moto.dir.path();
    moto.zone();
    let shim = moto.shim(&[]);
    let before = moto.inventory();
    let refused = regctl(
        dir,
        &shim.endpoint,
        &["provision", "--domain", DOMAIN, "--ssh-cidr", CIDR, "--key-name", "regctl-tset"],
    );
    let t = text(&refused);
    assert!(!refused.status.success(), "{t}");
    assert!(t.contains("ec2:DescribeKeyPairs"), "{t}");
    assert!(t.contains("key pair \"regctl-tset\" does not exist in us-east-1"), "{t}");
    assert!(t.contains("it has: ") && t.contains(KEY), "{t}");
    assert_eq!(moto.inventory(), before, "a refused provision changed something");
}

/// A Graviton instance type gets the arm64 Amazon Linux 2023 image (moto has both), and
/// provision says the server must be built for aarch64.
#[test]
fn an_arm64_instance_type_launches_the_arm64_image() {
    let Some(moto) = Moto::start() else { return };
    let dir = moto.dir.path();
    moto.zone();
    let shim = moto.shim(&[]);
    let out = ok(dir, &shim.endpoint, &provision_args(&["--instance-type", "t4g.small"]));
    assert!(out.contains("arm64 (Graviton)") && out.contains("aarch64-unknown-linux-musl"), "{out}");
    let inv = moto.inventory();
    let instances = live_instances(&inv);
    assert_eq!(instances.len(), 1, "{inv:#}");
    assert_eq!(instances[0]["image_architecture"], "arm64", "{inv:#}");
    // The default type stays on x86_64.
    let other = Moto::start().expect("moto");
    other.zone();
    let shim = other.shim(&[]);
    ok(other.dir.path(), &shim.endpoint, &provision_args(&[]));
    let inv = other.inventory();
    assert_eq!(live_instances(&inv)[0]["image_architecture"], "x86_64", "{inv:#}");
}

#[test]
fn a_subnet_that_gives_no_public_address_still_gets_the_instance_one() {
    let Some(moto) = Moto::start() else { return };
    let dir = moto.dir.path();
    moto.zone();
    // Default subnets whose MapPublicIpOnLaunch was turned off (as many accounts' VPCs are).
    moto.check(&["no-public-ips"]);
    let shim = moto.shim(&[]);
    let out = ok(dir, &shim.endpoint, &provision_args(&[]));
    assert!(
        out.contains("does not give instances a public IPv4 address: the new instance's interface asks"),
        "{out}"
    );
    let inv = moto.inventory();
    let ip = live_instances(&inv)[0]["public_ip"].clone();
    assert!(ip.is_string(), "the instance has no public address: {inv:#}");
    assert_eq!(inv["records"][0]["values"], serde_json::json!([ip]), "{inv:#}");
    // The group is on the instance's interface: the next run finds it there.
    let again = ok(dir, &shim.endpoint, &["provision"]);
    assert_eq!(again.matches(": up to date (").count(), 8, "{again}");
}

#[test]
fn two_public_zones_of_the_domains_name_are_warned_about() {
    let Some(moto) = Moto::start() else { return };
    let dir = moto.dir.path();
    let first = moto.zone();
    let second = moto.zone();
    let shim = moto.shim(&[]);
    let out = ok(dir, &shim.endpoint, &provision_args(&["--dry-run"]));
    assert!(out.contains("warning: 2 public hosted zones are named example.test.: using "), "{out}");
    assert!(out.contains(&first) && out.contains(&second) && out.contains("--hosted-zone-id"), "{out}");
    // Chosen with --hosted-zone-id: no guess, no warning.
    let chosen = ok(dir, &shim.endpoint, &provision_args(&["--dry-run", "--hosted-zone-id", &second]));
    assert!(!chosen.contains("warning") && chosen.contains(&format!("(zone {second})")), "{chosen}");
}

/// The element of `inv[key]` whose `name` is `name`.
fn named<'a>(inv: &'a Value, key: &str, name: &str) -> &'a Value {
    inv[key]
        .as_array()
        .and_then(|a| a.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("no {key} named {name}: {inv:#}"))
}

/// Asserts what `provision --instances 3` makes, as moto holds it.
fn assert_scaled(inv: &Value) {
    let group = named(inv, "auto_scaling_groups", "regctl-registry");
    assert_eq!(group["sizes"], serde_json::json!([3, 3, 3]), "{group:#}");
    assert_eq!(group["instances"].as_array().map(Vec::len), Some(3), "{group:#}");
    assert_eq!(group["health_check_type"], "ELB", "{group:#}");
    assert_eq!(group["launch_template"], "regctl-registry", "{group:#}");
    assert!(group["subnets"].as_u64().unwrap_or(0) >= 2, "two zones or more: {group:#}");
    assert_eq!(group["tags"]["regctl:deployment"], true, "propagated at launch: {group:#}");
    let instances = live_instances(inv);
    assert_eq!(instances.len(), 3, "{inv:#}");
    for i in &instances {
        assert_eq!(i["tags"]["regctl:deployment"], "registry", "{i:#}");
    }

    let template = named(inv, "launch_templates", "regctl-registry");
    assert_eq!(template["metadata"]["HttpTokens"], "required", "IMDSv2 only: {template:#}");
    assert_eq!(template["metadata"]["HttpPutResponseHopLimit"], 1, "{template:#}");
    assert_eq!(template["groups"], serde_json::json!(["regctl-registry"]), "{template:#}");
    assert_eq!(template["profile"], "regctl-registry", "{template:#}");
    assert_eq!(template["key_name"], KEY, "{template:#}");
    // The user data is the boot script that installs the release published in this bucket.
    let boot = template["user_data"].as_str().unwrap_or_default();
    let bucket = inv["buckets"][0]["name"].as_str().expect("the bucket");
    assert!(boot.starts_with("#!/bin/bash") && boot.contains(&format!("bucket={bucket}\n")), "{boot}");
    assert_eq!(template["tags"]["regctl:deployment"], "registry", "{template:#}");

    // The instances take HTTP only from the balancer; the balancer takes 80 and 443 from anywhere.
    let behind = named(inv, "security_groups", "regctl-registry");
    assert_eq!(
        behind["rules"],
        serde_json::json!([format!("tcp 22-22 {CIDR}"), "tcp 80-80 group regctl-registry-lb"]),
        "{behind:#}"
    );
    let front = named(inv, "security_groups", "regctl-registry-lb");
    assert_eq!(
        front["rules"],
        serde_json::json!([
            "tcp 443-443 0.0.0.0/0",
            "tcp 443-443 ::/0",
            "tcp 80-80 0.0.0.0/0",
            "tcp 80-80 ::/0"
        ]),
        "{front:#}"
    );

    let lb = named(inv, "load_balancers", "regctl-registry");
    assert_eq!((lb["scheme"].as_str(), lb["type"].as_str()), (Some("internet-facing"), Some("application")));
    assert_eq!(lb["idle_timeout"], "300", "{lb:#}");
    assert_eq!(lb["groups"], serde_json::json!(["regctl-registry-lb"]), "{lb:#}");
    assert_eq!(lb["tags"]["regctl:deployment"], "registry", "{lb:#}");
    let tg = named(inv, "target_groups", "regctl-registry");
    assert_eq!((tg["protocol"].as_str(), tg["port"].as_u64()), (Some("HTTP"), Some(80)), "{tg:#}");
    assert_eq!(tg["health_check_path"], "/health", "{tg:#}");
    assert_eq!(tg["deregistration_delay"], "30", "{tg:#}");
    assert_eq!(tg["targets"], group["instances"], "the group's instances are the targets: {inv:#}");
    assert_eq!(group["target_groups"], serde_json::json!([tg["arn"]]), "{group:#}");

    let cert = &inv["certificates"][0];
    assert_eq!(inv["certificates"].as_array().map(Vec::len), Some(1), "{inv:#}");
    assert_eq!(
        (cert["domain"].as_str(), cert["status"].as_str()),
        (Some(DOMAIN), Some("ISSUED")),
        "{cert:#}"
    );
    assert_eq!(cert["tags"]["regctl:deployment"], "registry", "{cert:#}");
    let validation = &cert["validation"][0];
    let records = inv["records"].as_array().expect("records");
    assert!(
        records.iter().any(|r| r["type"] == "CNAME"
            && r["name"] == validation["name"]
            && r["values"] == serde_json::json!([validation["value"]])),
        "the validation CNAME is in the zone: {inv:#}"
    );

    let mut listeners: Vec<&Value> = inv["listeners"].as_array().expect("listeners").iter().collect();
    listeners.sort_by_key(|l| l["port"].as_u64());
    assert_eq!(listeners.len(), 2, "{inv:#}");
    assert_eq!(
        (listeners[0]["port"].as_u64(), listeners[0]["action"].as_str()),
        (Some(80), Some("redirect"))
    );
    assert_eq!(listeners[0]["redirect"]["Protocol"], "HTTPS", "{inv:#}");
    assert_eq!(listeners[0]["redirect"]["Port"], "443", "{inv:#}");
    assert_eq!(listeners[0]["redirect"]["StatusCode"], "HTTP_301", "{inv:#}");
    let https = listeners[1];
    assert_eq!((https["port"].as_u64(), https["protocol"].as_str()), (Some(443), Some("HTTPS")), "{https:#}");
    assert_eq!(https["ssl_policy"], "ELBSecurityPolicy-TLS13-1-2-2021-06", "{https:#}");
    assert_eq!(https["certificates"], serde_json::json!([cert["arn"]]), "{https:#}");
    assert_eq!(https["forward_to"], tg["arn"], "{https:#}");

    let alias: Vec<&Value> = records.iter().filter(|r| r["type"] == "A").collect();
    assert_eq!(alias.len(), 1, "{inv:#}");
    assert_eq!(alias[0]["name"], format!("{DOMAIN}."));
    let target =
        alias[0]["alias"]["dns_name"].as_str().unwrap_or("").trim_end_matches('.').to_ascii_lowercase();
    assert!(target.ends_with(&lb["dns_name"].as_str().unwrap_or("?").to_ascii_lowercase()), "{inv:#}");
    assert_eq!(alias[0]["alias"]["zone"], lb["zone_id"], "{inv:#}");
}

#[test]
fn provision_with_three_instances_makes_a_load_balanced_group_and_teardown_removes_it() {
    let Some(moto) = Moto::start() else { return };
    let shim = moto.shim(&[]);
    let dir = moto.dir.path();
    moto.zone();

    let dry = ok(dir, &shim.endpoint, &provision_args(&["--instances", "3", "--dry-run"]));
    assert!(!dry.contains("up to date"), "{dry}");
    assert_eq!(moto.inventory()["buckets"], serde_json::json!([]), "--dry-run changed something");

    let out = ok(dir, &shim.endpoint, &provision_args(&["--instances", "3", "--output", "json"]));
    let first: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("JSON summary ({e}):\n{out}"));
    let steps = steps_of(&first);
    assert!(steps.iter().all(|(_, action)| action == "create"), "{steps:?}");
    for resource in [
        "security group",
        "target group",
        "ACM certificate",
        "load balancer",
        "listener",
        "launch template",
        "Auto Scaling group",
        "DNS record",
    ] {
        assert!(steps.iter().any(|(r, _)| r == resource), "no {resource} step: {steps:?}");
    }
    assert!(first["load_balancer"].is_string(), "{first:#}");
    let inv = moto.inventory();
    assert_scaled(&inv);
    let recorded = std::fs::read_to_string(dir.join("regctl.toml")).expect("state file");
    assert!(recorded.contains("instances = 3"), "{recorded}");

    // Again, with no flags: nothing changes.
    let again = ok(dir, &shim.endpoint, &["provision"]);
    assert_eq!(again.matches(": up to date (").count(), steps.len(), "{again}");
    assert!(again.contains("no changes"), "{again}");
    assert_eq!(moto.inventory(), inv, "a second provision changed something");

    // status: every resource as wanted, and each instance's target health.
    let status: Value =
        serde_json::from_str(&ok(dir, &shim.endpoint, &["status", "--output", "json"])).expect("status JSON");
    let statuses: Vec<&str> = status["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["status"].as_str())
        .collect();
    assert_eq!(statuses, vec!["ok"; steps.len()], "{status:#}");
    let members = status["group"]["instances"].as_array().expect("the group's instances");
    assert_eq!(members.len(), 3, "{status:#}");
    assert!(members.iter().all(|m| m["target_health"].is_string()), "{status:#}");
    let shown = ok(dir, &shim.endpoint, &["status"]);
    assert!(shown.contains("Auto Scaling group regctl-registry: 3 of 3 instances"), "{shown}");
    assert_eq!(shown.matches("; load balancer: ").count(), 3, "{shown}");

    // A single instance is not launched next to the group.
    let single = regctl(dir, &shim.endpoint, &["provision", "--instances", "1"]);
    let t = text(&single);
    assert!(!single.status.success(), "{t}");
    assert!(
        t.contains("runs 3 instances in Auto Scaling group regctl-registry") && t.contains("teardown"),
        "{t}"
    );
    assert_eq!(moto.inventory(), inv, "a refused provision changed something");

    // Without the state file, status and teardown find all of it from tags and derived names.
    std::fs::remove_file(dir.join("regctl.toml")).expect("state file");
    let found = ok(dir, &shim.endpoint, &["status"]);
    for present in [
        "present  Auto Scaling group regctl-registry (with its instances)",
        "present  load balancer regctl-registry",
        "present  listener port 443",
        "present  target group regctl-registry",
        "present  ACM certificate registry.example.test (ISSUED)",
        "present  certificate validation record",
        "present  launch template regctl-registry",
        "present  DNS record registry.example.test A",
    ] {
        assert!(found.contains(present), "{present}: {found}");
    }
    let before = moto.inventory();
    let plan = ok(dir, &shim.endpoint, &["teardown", "--dry-run", "--delete-bucket"]);
    let listed: Vec<&str> = plan.lines().map(str::trim_start).collect();
    let at = |prefix: &str| {
        listed.iter().position(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix}: {plan}"))
    };
    // In dependency order: what uses a resource goes before it.
    let order = [
        at("DNS record"),
        at("Auto Scaling group"),
        at("launch template"),
        at("listener"),
        at("load balancer"),
        at("target group"),
        at("certificate validation record"),
        at("ACM certificate"),
        at("security group regctl-registry ("),
        at("security group regctl-registry-lb"),
    ];
    assert!(order.is_sorted(), "{order:?}: {plan}");
    assert_eq!(moto.inventory(), before, "teardown --dry-run changed something");
    let down = ok(dir, &shim.endpoint, &["teardown", "--yes", "--delete-bucket"]);
    assert!(down.contains("teardown complete"), "{down}");
    assert_nothing_left(&moto.inventory(), true);
    let nothing = ok(dir, &shim.endpoint, &["teardown", "--yes"]);
    assert!(nothing.contains("nothing of deployment registry found"), "{nothing}");
}

#[test]
fn a_scaled_provision_and_teardown_killed_after_each_change_converge_with_no_duplicate_or_orphan() {
    let Some(moto) = Moto::start() else { return };
    let dir = moto.dir.path();
    moto.zone();

    let made = kill_after_each_change(&moto, &provision_args(&["--instances", "3"]), 3);
    for step in [
        "CreateSecurityGroup",
        "AuthorizeSecurityGroupIngress",
        "CreateTargetGroup",
        "ModifyTargetGroupAttributes",
        "RequestCertificate",
        "ChangeResourceRecordSets",
        "CreateLoadBalancer",
        "ModifyLoadBalancerAttributes",
        "CreateListener",
        "CreateLaunchTemplate",
        "CreateAutoScalingGroup",
    ] {
        assert!(made.iter().any(|a| a == step), "provision was never killed right after {step}: {made:?}");
    }
    // What the interrupted runs built is what one run builds: a run now changes nothing.
    let shim = moto.shim(&[]);
    let again = ok(dir, &shim.endpoint, &["provision"]);
    assert!(again.contains("no changes"), "{again}");
    assert_scaled(&moto.inventory());

    let removed = kill_after_each_change(&moto, &["teardown", "--yes", "--delete-bucket"], 3);
    for step in [
        "DeleteAutoScalingGroup",
        "DeleteLaunchTemplate",
        "DeleteListener",
        "DeleteLoadBalancer",
        "DeleteTargetGroup",
        "DeleteCertificate",
        "ChangeResourceRecordSets",
        "DeleteSecurityGroup",
    ] {
        assert!(
            removed.iter().any(|a| a == step),
            "teardown was never killed right after {step}: {removed:?}"
        );
    }
    assert_nothing_left(&moto.inventory(), true);
    assert!(!dir.join("regctl.toml").exists(), "the state entry is forgotten");
    eprintln!(
        "scaled provision killed after each of its {} changes and re-run: {made:?}; teardown after each of its \
         {}: {removed:?}",
        made.len(),
        removed.len()
    );
}

/// A changed launch template (here the instance type) becomes the group's: provision starts an
/// instance refresh that launches before it terminates, and waits for it (moto has no instance
/// refreshes: the shim answers them, `--instance-refreshes`).
#[test]
fn a_changed_launch_template_refreshes_the_groups_instances() {
    let Some(moto) = Moto::start() else { return };
    let dir = moto.dir.path();
    moto.zone();
    let shim = moto.shim(&[]);
    ok(dir, &shim.endpoint, &provision_args(&["--instances", "3"]));

    let mut refreshing = moto.shim(&["--instance-refreshes"]);
    let out = ok(dir, &refreshing.endpoint, &["provision", "--instance-type", "t3.medium"]);
    assert!(
        out.contains("launch template regctl-registry: updated: instance type t3.small -> t3.medium"),
        "{out}"
    );
    assert!(out.contains("instance refresh regctl-registry: updated: replace the 3 instances"), "{out}");
    assert_eq!(
        shim_lines(&mut refreshing, "REFRESH "),
        ["REFRESH regctl-registry min=100 max=200 skip-matching=true"]
    );
    let template = named(&moto.inventory(), "launch_templates", "regctl-registry").clone();
    assert_eq!(
        (template["versions"].as_u64(), template["instance_type"].as_str()),
        (Some(2), Some("t3.medium"))
    );

    // Nothing changed since: no refresh.
    let again = ok(dir, &refreshing.endpoint, &["provision"]);
    assert!(again.contains("no changes") && !again.contains("instance refresh"), "{again}");
    assert_eq!(shim_lines(&mut refreshing, "REFRESH "), Vec::<String>::new());
}

#[test]
fn deploy_of_a_scaled_deployment_publishes_the_release_makes_the_first_user_and_replaces_every_instance() {
    let Some(moto) = Moto::start() else { return };
    let dir = moto.dir.path();
    moto.zone();
    let shim = moto.shim(&[]);
    let provisioned = ok(dir, &shim.endpoint, &provision_args(&["--instances", "3"]));
    assert!(provisioned.contains("next: `regctl deploy` publishes the release"), "{provisioned}");
    let inv = moto.inventory();
    let bucket = inv["buckets"][0]["name"].as_str().expect("the bucket").to_string();

    // A server as the instances run it, behind the balancer: users kept in the bucket.
    let env = [
        ("REGISTRY_STORAGE", "s3"),
        ("REGISTRY_STORAGE_S3_BUCKET", bucket.as_str()),
        ("REGISTRY_STORAGE_S3_REGION", "us-east-1"),
        ("REGISTRY_STORAGE_S3_REGIONENDPOINT", moto.direct.as_str()),
        ("REGISTRY_STORAGE_S3_FORCEPATHSTYLE", "true"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let server = crate::util::Server::start_on_env(&dir.join("unused"), &["--users-in-storage"], &env);
    let health = server.url("/v2/");

    let mut refreshing = moto.shim(&["--instance-refreshes"]);
    let deploy = ["deploy", "--password-stdin", "--health-url", health.as_str(), "--wait", "30"];
    let mut child = regctl_cmd(dir, &refreshing.endpoint, &deploy)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start regctl deploy");
    {
        use std::io::Write as _;
        child.stdin.take().expect("stdin").write_all(b"first-admin-pw\n").expect("write the password");
    }
    let out = child.wait_with_output().expect("run regctl deploy");
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("created the first user, admin"), "{t}");
    assert!(t.contains("every instance of regctl-registry was replaced"), "{t}");
    // The same launch template, a new release: every instance is replaced, none skipped.
    assert_eq!(
        shim_lines(&mut refreshing, "REFRESH "),
        ["REFRESH regctl-registry min=100 max=200 skip-matching=false"]
    );
    // The servers read the first user from the bucket.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let status = crate::util::http()
            .get(&health)
            .basic_auth("admin", Some("first-admin-pw"))
            .send()
            .map(|r| r.status().as_u16());
        if status.as_ref().is_ok_and(|s| *s == 200) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the first user was not accepted: {status:?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // The same release again: nothing published, no instance replaced, no password asked.
    let again = ok(dir, &refreshing.endpoint, &deploy);
    assert!(again.contains("Nothing to change"), "{again}");
    assert_eq!(shim_lines(&mut refreshing, "REFRESH "), Vec::<String>::new());
    // A scaled deployment has no single instance to reach over SSH.
    let refused = regctl(dir, &shim.endpoint, &["deploy", "--host", "203.0.113.9"]);
    assert!(!refused.status.success() && text(&refused).contains("is scaled"), "{}", text(&refused));
}

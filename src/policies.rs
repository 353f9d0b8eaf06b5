//! The IAM policy documents in `policies/`, embedded at build time and rendered with explicit
//! variables.

/// The S3 policy of the registry, with `{{partition}}` and `{{bucket}}` where the ARN partition
/// and the bucket name go.
const S3_BUCKET_TEMPLATE: &str = include_str!("../policies/s3-bucket.json");

/// The trust policy that lets EC2 instances assume the registry's role.
pub const EC2_TRUST: &str = include_str!("../policies/ec2-trust.json");

/// Checks a bucket name against S3's rules for new buckets: 3 to 63 characters of lowercase
/// letters, digits, `.` and `-`, beginning and ending with a letter or digit, no `..`, not an IP
/// address. Validating here also keeps the name from breaking out of the JSON string it is
/// rendered into.
pub fn validate_bucket_name(bucket: &str) -> Result<(), String> {
    let allowed =
        bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    let edges = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let looks_like_ip = bucket.split('.').count() == 4 && bucket.split('.').all(|p| p.parse::<u8>().is_ok());
    if !(3..=63).contains(&bucket.len())
        || !allowed
        || !edges(bucket.chars().next())
        || !edges(bucket.chars().last())
        || bucket.contains("..")
        || looks_like_ip
    {
        return Err(format!(
            "invalid bucket name {bucket:?}: use 3 to 63 lowercase letters, digits, '.' and '-', \
             beginning and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// The registry's S3 policy for `bucket` in ARN `partition` (`aws`, `aws-cn`, ...): list and
/// multipart listing on the bucket, object read/write/delete and multipart part handling on its
/// objects, nothing else; and no writing or deleting of the releases (read-only for the
/// instances, which install them at boot).
pub fn s3_bucket_policy(partition: &str, bucket: &str) -> Result<String, String> {
    validate_bucket_name(bucket)?;
    if partition.is_empty() || !partition.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
        return Err(format!("invalid ARN partition {partition:?}"));
    }
    Ok(S3_BUCKET_TEMPLATE.replace("{{partition}}", partition).replace("{{bucket}}", bucket))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn statements(doc: &Value) -> &Vec<Value> {
        doc["Statement"].as_array().expect("Statement is a list")
    }

    fn actions(statement: &Value) -> Vec<&str> {
        statement["Action"].as_array().expect("Action is a list").iter().filter_map(Value::as_str).collect()
    }

    /// The least-privilege policy an operator needs to run `provision`, `deploy`, `status`,
    /// `teardown`, `history` and `restore`: shipped for users to attach, never applied by regctl itself.
    const OPERATOR: &str = include_str!("../policies/operator.json");

    /// Every `service:Action` label an AWS call reports its errors under, in the code outside
    /// its tests: the actions regctl calls.
    fn actions_called() -> std::collections::BTreeSet<String> {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        // Modules may be directories (ops/deploy/): read them too.
        let mut dirs: Vec<_> = ["aws", "ops", "commands"].iter().map(|d| src.join(d)).collect();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).expect("a source directory") {
                let path = entry.expect("an entry").path();
                if path.is_dir() { dirs.push(path) } else { files.push(path) }
            }
        }
        let mut called = std::collections::BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("a source file");
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for service in
                ["ec2", "iam", "route53", "s3", "sts", "elasticloadbalancing", "autoscaling", "acm"]
            {
                for (at, _) in code.match_indices(&format!("\"{service}:")) {
                    let action: String = code[at + service.len() + 2..]
                        .chars()
                        .take_while(char::is_ascii_alphanumeric)
                        .collect();
                    let label = format!("{service}:{action}");
                    // Labels that are not IAM actions: HeadBucket is authorised by ListBucket;
                    // TagResource names a local failure to build a tag; GetCallerIdentity
                    // needs no permission.
                    match label.as_str() {
                        // `"s3://bucket/key"`: an address, not an action.
                        _ if action.is_empty() => false,
                        "s3:HeadBucket" => called.insert("s3:ListBucket".to_string()),
                        "iam:TagResource" | "sts:GetCallerIdentity" => false,
                        _ => called.insert(label),
                    };
                }
            }
        }
        called
    }

    #[test]
    fn the_operator_policy_grants_exactly_the_actions_regctl_calls() {
        let doc: Value = serde_json::from_str(OPERATOR).expect("valid JSON");
        let mut granted = std::collections::BTreeSet::new();
        for s in statements(&doc) {
            assert_eq!(s["Effect"], "Allow");
            assert!(s.get("NotAction").is_none() && s.get("NotResource").is_none());
            let list = match &s["Action"] {
                Value::String(one) => vec![one.as_str()],
                _ => actions(s),
            };
            for action in list {
                assert!(!action.contains('*'), "a wildcard action: {action}");
                granted.insert(action.to_string());
            }
            if s["Resource"] == "*" {
                let unscoped = ["Describe", "Get", "List"];
                let mutating = s["Sid"] == "ManageTheInstanceItsGroupAndAddress";
                for action in actions(s) {
                    let verb = action.split(':').nth(1).unwrap_or_default();
                    assert!(
                        mutating || unscoped.iter().any(|v| verb.starts_with(v)),
                        "{action} on every resource"
                    );
                    assert!(!action.starts_with("iam:") && !action.starts_with("s3:Put"), "{action} on *");
                }
            }
        }
        // Permissions that are not API calls of their own: iam:PassRole (RunInstances,
        // AssociateIamInstanceProfile and an Auto Scaling group's launch template need it for the
        // instance role), the tags a scaled deployment's create calls set (ELB, Auto Scaling and
        // ACM check them as their own actions), and the service-linked roles ELB and Auto Scaling
        // create on their first use in an account.
        for implied in [
            "iam:PassRole",
            "elasticloadbalancing:AddTags",
            "autoscaling:CreateOrUpdateTags",
            "acm:AddTagsToCertificate",
            "iam:CreateServiceLinkedRole",
        ] {
            assert!(granted.remove(implied), "{implied}");
        }
        let called = actions_called();
        let missing: Vec<_> = called.difference(&granted).collect();
        let unused: Vec<_> = granted.difference(&called).collect();
        assert!(missing.is_empty(), "called but not in policies/operator.json: {missing:?}");
        assert!(unused.is_empty(), "in policies/operator.json but never called: {unused:?}");
    }

    #[test]
    fn s3_policy_is_valid_json_scoped_to_the_bucket_with_exactly_the_needed_actions() {
        let doc: Value = serde_json::from_str(&s3_bucket_policy("aws", "my-registry").expect("valid name"))
            .expect("valid JSON");
        assert_eq!(doc["Version"], "2012-10-17");
        let st = statements(&doc);
        assert_eq!(st.len(), 3);
        for s in st {
            assert!(s.get("NotAction").is_none() && s.get("NotResource").is_none());
        }
        assert_eq!(st[0]["Effect"], "Allow");
        assert_eq!(st[0]["Resource"], "arn:aws:s3:::my-registry");
        assert_eq!(
            actions(&st[0]),
            ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"]
        );
        assert_eq!(st[1]["Effect"], "Allow");
        assert_eq!(st[1]["Resource"], "arn:aws:s3:::my-registry/*");
        assert_eq!(
            actions(&st[1]),
            [
                "s3:PutObject",
                "s3:GetObject",
                "s3:DeleteObject",
                "s3:ListMultipartUploadParts",
                "s3:AbortMultipartUpload"
            ]
        );
        // The instances read the release every one of them installs at boot, and cannot
        // change it: a compromised server cannot plant what the next instances run.
        assert_eq!(st[2]["Effect"], "Deny");
        assert_eq!(st[2]["Resource"], format!("arn:aws:s3:::my-registry/{}/*", crate::ops::release::PREFIX));
        assert_eq!(actions(&st[2]), ["s3:PutObject", "s3:DeleteObject"]);
        let text = doc.to_string();
        // The server can never destroy history: `regctl restore` relies on the versions it leaves.
        assert!(!text.contains("DeleteObjectVersion") && !text.contains("PutLifecycle"), "{text}");
        assert_eq!(text.matches('*').count(), 2, "no wildcard but bucket/* and the releases: {text}");
        assert!(!text.contains("{{"), "unrendered variable: {text}");
    }

    #[test]
    fn trust_policy_lets_only_ec2_assume_the_role() {
        let doc: Value = serde_json::from_str(EC2_TRUST).expect("valid JSON");
        let st = statements(&doc);
        assert_eq!(st.len(), 1);
        assert_eq!(st[0]["Effect"], "Allow");
        assert_eq!(st[0]["Principal"], serde_json::json!({"Service": "ec2.amazonaws.com"}));
        assert_eq!(st[0]["Action"], "sts:AssumeRole");
    }

    #[test]
    fn bucket_names_are_validated_before_rendering() {
        for bad in ["ab", "My-Bucket", "a\"b", "bucket-", "a..b", "192.168.1.1", &"a".repeat(64)] {
            assert!(s3_bucket_policy("aws", bad).is_err(), "{bad:?} accepted");
        }
        for good in ["abc", "my.registry-1", &"a".repeat(63)] {
            assert!(s3_bucket_policy("aws", good).is_ok(), "{good:?} rejected");
        }
    }
}

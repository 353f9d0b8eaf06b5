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
/// objects, nothing else.
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

    #[test]
    fn s3_policy_is_valid_json_scoped_to_the_bucket_with_exactly_the_needed_actions() {
        let doc: Value = serde_json::from_str(&s3_bucket_policy("aws", "my-registry").expect("valid name"))
            .expect("valid JSON");
        assert_eq!(doc["Version"], "2012-10-17");
        let st = statements(&doc);
        assert_eq!(st.len(), 2);
        for s in st {
            assert_eq!(s["Effect"], "Allow");
            assert!(s.get("NotAction").is_none() && s.get("NotResource").is_none());
        }
        assert_eq!(st[0]["Resource"], "arn:aws:s3:::my-registry");
        assert_eq!(
            actions(&st[0]),
            ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"]
        );
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
        let text = doc.to_string();
        assert!(!text.contains('*') || text.matches('*').count() == 1, "no wildcard but bucket/*: {text}");
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

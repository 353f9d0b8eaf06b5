//! The launch template of a scaled deployment's instances: the image, type, key pair, instance
//! profile, security group, IMDSv2 only, the boot script, and the deployment's tags on each
//! instance and volume. A change makes a new version (the group launches `$Latest`), so running
//! instances are replaced by an instance refresh, never edited in place.

use aws_sdk_ec2::types::{
    InstanceType, LaunchTemplateHttpTokensState, LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceMetadataEndpointState, LaunchTemplateInstanceMetadataOptionsRequest,
    LaunchTemplateInstanceNetworkInterfaceSpecificationRequest, LaunchTemplateTagSpecificationRequest,
    RequestLaunchTemplateData, ResourceType,
};
use base64::Engine;

use super::{
    AwsError, AwsResultExt, Change, Removed, TAG_DEPLOYMENT, ec2_filter, ec2_tag_spec, ec2_tags,
    not_found_as_none,
};

/// The hop limit of IMDSv2 tokens: 1, so only processes on the instance itself (the registry
/// runs there natively, not in a container behind a bridge, which would need 2) get credentials.
pub const METADATA_HOP_LIMIT: i32 = 1;

/// The launch template as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Template name.
    pub name: String,
    /// AMI.
    pub ami: String,
    /// Instance type.
    pub instance_type: String,
    /// EC2 key pair, if any.
    pub key_name: Option<String>,
    /// Instance profile name.
    pub instance_profile: String,
    /// The instances' security group (`None`: not made yet, in a dry run).
    pub security_group: Option<String>,
    /// The boot script (plain text; base64-encoded on the wire).
    pub user_data: String,
    /// Deployment name, for the tags.
    pub deployment: String,
}

/// What the template's latest version launches, as compared.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Launches {
    ami: Option<String>,
    instance_type: Option<String>,
    key_name: Option<String>,
    instance_profile: Option<String>,
    security_groups: Vec<String>,
    http_tokens: Option<String>,
    hop_limit: Option<i32>,
    user_data: Option<String>,
}

impl Desired {
    fn launches(&self) -> Launches {
        Launches {
            ami: Some(self.ami.clone()),
            instance_type: Some(self.instance_type.clone()),
            key_name: self.key_name.clone(),
            instance_profile: Some(self.instance_profile.clone()),
            security_groups: self.security_group.iter().cloned().collect(),
            http_tokens: Some(LaunchTemplateHttpTokensState::Required.as_str().to_string()),
            hop_limit: Some(METADATA_HOP_LIMIT),
            user_data: Some(base64::engine::general_purpose::STANDARD.encode(&self.user_data)),
        }
    }

    fn data(&self) -> RequestLaunchTemplateData {
        let tags = ec2_tags(&self.deployment, &[]);
        let tagged = |kind| {
            LaunchTemplateTagSpecificationRequest::builder()
                .resource_type(kind)
                .set_tags(Some(tags.clone()))
                .build()
        };
        RequestLaunchTemplateData::builder()
            .image_id(&self.ami)
            .instance_type(InstanceType::from(self.instance_type.as_str()))
            .set_key_name(self.key_name.clone())
            .iam_instance_profile(
                LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                    .name(&self.instance_profile)
                    .build(),
            )
            // A public address on the interface: the instances reach S3 and the package mirrors
            // without a NAT gateway, whatever the subnet's own setting.
            .network_interfaces(
                LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
                    .device_index(0)
                    .associate_public_ip_address(true)
                    .delete_on_termination(true)
                    .set_groups(Some(self.security_group.iter().cloned().collect()))
                    .build(),
            )
            .metadata_options(
                LaunchTemplateInstanceMetadataOptionsRequest::builder()
                    .http_tokens(LaunchTemplateHttpTokensState::Required)
                    .http_put_response_hop_limit(METADATA_HOP_LIMIT)
                    .http_endpoint(LaunchTemplateInstanceMetadataEndpointState::Enabled)
                    .build(),
            )
            .user_data(base64::engine::general_purpose::STANDARD.encode(&self.user_data))
            .tag_specifications(tagged(ResourceType::Instance))
            .tag_specifications(tagged(ResourceType::Volume))
            .build()
    }
}

/// The launch template as it is.
#[derive(Debug, Clone)]
pub struct Observed {
    launches: Launches,
}

fn resource(name: &str) -> String {
    format!("launch template {name}")
}

/// Finds the template by name and reads its latest version; `None` when it does not exist.
pub async fn observe(aws: &super::Aws, name: &str) -> Result<Option<Observed>, AwsError> {
    let res = resource(name);
    let out = aws
        .ec2
        .describe_launch_templates()
        .launch_template_names(name)
        .send()
        .await
        .aws("ec2:DescribeLaunchTemplates", &res);
    let Some(out) = not_found_as_none(out, &["InvalidLaunchTemplateName.NotFoundException"])? else {
        return Ok(None);
    };
    let Some(id) = out.launch_templates().first().and_then(|t| t.launch_template_id()) else {
        return Ok(None);
    };
    let versions = aws
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(id)
        .versions("$Latest")
        .send()
        .await
        .aws("ec2:DescribeLaunchTemplateVersions", &res)?;
    let data = versions.launch_template_versions().first().and_then(|v| v.launch_template_data());
    let interface = data.and_then(|d| d.network_interfaces().first());
    let metadata = data.and_then(|d| d.metadata_options());
    Ok(Some(Observed {
        launches: Launches {
            ami: data.and_then(|d| d.image_id()).map(str::to_string),
            instance_type: data.and_then(|d| d.instance_type()).map(|t| t.as_str().to_string()),
            key_name: data.and_then(|d| d.key_name()).map(str::to_string),
            instance_profile: data
                .and_then(|d| d.iam_instance_profile())
                .and_then(|p| p.name())
                .map(str::to_string),
            security_groups: interface.map(|i| i.groups().to_vec()).unwrap_or_default(),
            http_tokens: metadata.and_then(|m| m.http_tokens()).map(|t| t.as_str().to_string()),
            hop_limit: metadata.and_then(|m| m.http_put_response_hop_limit()),
            user_data: data.and_then(|d| d.user_data()).map(str::to_string),
        },
    }))
}

/// Compares the template's latest version with what is wanted.
pub fn plan(observed: Option<&Observed>, d: &Desired) -> Change {
    let Some(o) = observed else { return Change::Create };
    let (have, want) = (&o.launches, d.launches());
    let mut changes = Vec::new();
    let mut differs = |what: &str, a: String, b: String| {
        if a != b {
            changes.push(format!("{what} {a} -> {b}"));
        }
    };
    let shown = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".to_string());
    differs("image", shown(&have.ami), shown(&want.ami));
    differs("instance type", shown(&have.instance_type), shown(&want.instance_type));
    differs("key pair", shown(&have.key_name), shown(&want.key_name));
    differs("instance profile", shown(&have.instance_profile), shown(&want.instance_profile));
    differs("security groups", have.security_groups.join(","), want.security_groups.join(","));
    differs("metadata tokens", shown(&have.http_tokens), shown(&want.http_tokens));
    differs(
        "metadata hop limit",
        have.hop_limit.map_or_else(|| "none".into(), |h| h.to_string()),
        want.hop_limit.map_or_else(|| "none".into(), |h| h.to_string()),
    );
    if have.user_data != want.user_data {
        changes.push("new boot script".to_string());
    }
    Change::update_or_unchanged(changes)
}

/// Creates the template, or a new version of it made the default, as planned.
pub async fn apply(aws: &super::Aws, d: &Desired, change: &Change) -> Result<(), AwsError> {
    let res = resource(&d.name);
    match change {
        Change::Create => {
            let created = aws
                .ec2
                .create_launch_template()
                .launch_template_name(&d.name)
                // The same token returns the same template: a retried create makes no second one.
                .client_token(format!("regctl-{}-launch-template", d.deployment))
                .launch_template_data(d.data())
                .tag_specifications(ec2_tag_spec(ResourceType::LaunchTemplate, &ec2_tags(&d.deployment, &[])))
                .send()
                .await
                .aws("ec2:CreateLaunchTemplate", &res);
            match created {
                Ok(_) => Ok(()),
                // Made by an interrupted run (with other data, or its token forgotten): converge it.
                Err(e) if e.is("InvalidLaunchTemplateName.AlreadyExistsException") => {
                    let again = plan(observe(aws, &d.name).await?.as_ref(), d);
                    Box::pin(apply(aws, d, &again)).await
                }
                Err(e) => Err(e),
            }
        }
        Change::Update(_) => {
            let out = aws
                .ec2
                .create_launch_template_version()
                .launch_template_name(&d.name)
                .launch_template_data(d.data())
                .send()
                .await
                .aws("ec2:CreateLaunchTemplateVersion", &res)?;
            let version =
                out.launch_template_version().and_then(|v| v.version_number()).ok_or_else(|| {
                    AwsError::local("ec2:CreateLaunchTemplateVersion", &res, "no version in the answer")
                })?;
            aws.ec2
                .modify_launch_template()
                .launch_template_name(&d.name)
                .default_version(version.to_string())
                .send()
                .await
                .aws("ec2:ModifyLaunchTemplate", &res)?;
            Ok(())
        }
        Change::Unchanged | Change::Delete => Ok(()),
    }
}

/// The launch templates tagged with `deployment`, as (ID, name).
pub async fn find_tagged(aws: &super::Aws, deployment: &str) -> Result<Vec<(String, String)>, AwsError> {
    let out = aws
        .ec2
        .describe_launch_templates()
        .filters(ec2_filter(&format!("tag:{TAG_DEPLOYMENT}"), &[deployment]))
        .send()
        .await
        .aws("ec2:DescribeLaunchTemplates", &format!("launch templates of {deployment}"))?;
    Ok(out
        .launch_templates()
        .iter()
        .filter_map(|t| Some((t.launch_template_id()?.to_string(), t.launch_template_name()?.to_string())))
        .collect())
}

/// Deletes the template (all its versions).
pub async fn destroy(aws: &super::Aws, id: &str, name: &str) -> Result<Removed, AwsError> {
    let r = aws
        .ec2
        .delete_launch_template()
        .launch_template_id(id)
        .send()
        .await
        .aws("ec2:DeleteLaunchTemplate", &resource(name));
    Ok(not_found_as_none(
        r,
        &["InvalidLaunchTemplateId.NotFound", "InvalidLaunchTemplateName.NotFoundException"],
    )?
    .map_or(Removed::Absent, |_| Removed::Deleted))
}

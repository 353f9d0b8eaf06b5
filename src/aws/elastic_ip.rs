//! The Elastic IP (only with `--elastic-ip`): a public address that survives a stop and start of
//! the instance.

use aws_sdk_ec2::types::{DomainType, ResourceType};

use super::{
    AwsError, AwsResultExt, Change, Removed, TAG_DEPLOYMENT, ec2_filter, ec2_tag_spec, ec2_tags,
    not_found_as_none,
};

/// The address as it is.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Allocation ID.
    pub allocation_id: String,
    /// The public IPv4 address.
    pub public_ip: String,
    /// The instance it is associated with.
    pub instance_id: Option<String>,
    /// The association, if any.
    pub association_id: Option<String>,
}

/// What `apply` will do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The summary.
    pub change: Change,
}

fn resource(deployment: &str) -> String {
    format!("Elastic IP of {deployment}")
}

/// The address tagged with `deployment`, if any.
pub async fn observe(aws: &super::Aws, deployment: &str) -> Result<Option<Observed>, AwsError> {
    let out = aws
        .ec2
        .describe_addresses()
        .filters(ec2_filter(&format!("tag:{TAG_DEPLOYMENT}"), &[deployment]))
        .send()
        .await
        .aws("ec2:DescribeAddresses", &resource(deployment))?;
    Ok(out.addresses().first().map(|a| Observed {
        allocation_id: a.allocation_id().unwrap_or_default().to_string(),
        public_ip: a.public_ip().unwrap_or_default().to_string(),
        instance_id: a.instance_id().map(str::to_string),
        association_id: a.association_id().map(str::to_string),
    }))
}

/// Compares the address with what is wanted: one associated with `instance` when `wanted`,
/// none otherwise.
pub fn plan(observed: Option<&Observed>, wanted: bool, instance: Option<&str>) -> Plan {
    let change = match (observed, wanted) {
        (None, true) => Change::Create,
        (None, false) => Change::Unchanged,
        (Some(_), false) => Change::Delete,
        (Some(o), true) if instance.is_some() && o.instance_id.as_deref() == instance => Change::Unchanged,
        (Some(o), true) => Change::Update(vec![format!(
            "associate {} with {}",
            o.public_ip,
            instance.unwrap_or("the new instance")
        )]),
    };
    Plan { change }
}

/// Allocates, associates or releases the address as planned; returns the address in use.
pub async fn apply(
    aws: &super::Aws,
    deployment: &str,
    observed: Option<&Observed>,
    plan: &Plan,
    instance: &str,
) -> Result<Option<String>, AwsError> {
    let res = resource(deployment);
    let address = match (&plan.change, observed) {
        (Change::Unchanged, o) => return Ok(o.map(|o| o.public_ip.clone())),
        (Change::Delete, Some(o)) => {
            release(aws, o, &res).await?;
            return Ok(None);
        }
        (_, Some(o)) => o.clone(),
        (_, None) => {
            let out = aws
                .ec2
                .allocate_address()
                .domain(DomainType::Vpc)
                .tag_specifications(ec2_tag_spec(ResourceType::ElasticIp, &ec2_tags(deployment, &[])))
                .send()
                .await
                .aws("ec2:AllocateAddress", &res)?;
            Observed {
                allocation_id: out.allocation_id().unwrap_or_default().to_string(),
                public_ip: out.public_ip().unwrap_or_default().to_string(),
                instance_id: None,
                association_id: None,
            }
        }
    };
    aws.ec2
        .associate_address()
        .allocation_id(&address.allocation_id)
        .instance_id(instance)
        .allow_reassociation(true)
        .send()
        .await
        .aws("ec2:AssociateAddress", &res)?;
    Ok(Some(address.public_ip))
}

async fn release(aws: &super::Aws, o: &Observed, res: &str) -> Result<(), AwsError> {
    if let Some(assoc) = &o.association_id {
        let r = aws
            .ec2
            .disassociate_address()
            .association_id(assoc)
            .send()
            .await
            .aws("ec2:DisassociateAddress", res);
        not_found_as_none(r, &["InvalidAssociationID.NotFound"])?;
    }
    let r =
        aws.ec2.release_address().allocation_id(&o.allocation_id).send().await.aws("ec2:ReleaseAddress", res);
    not_found_as_none(r, &["InvalidAllocationID.NotFound"])?;
    Ok(())
}

/// Disassociates and releases the deployment's address.
pub async fn destroy(aws: &super::Aws, deployment: &str) -> Result<Removed, AwsError> {
    let Some(o) = observe(aws, deployment).await? else { return Ok(Removed::Absent) };
    release(aws, &o, &resource(deployment)).await?;
    Ok(Removed::Deleted)
}

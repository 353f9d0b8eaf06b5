//! The Route 53 A record of the registry's DNS name, pointing at the instance's public address;
//! every change is waited for until Route 53 reports it INSYNC. A record is the deployment's only
//! while it points at one of the deployment's addresses: another value is never deleted, and is
//! replaced only when the operator says so.

use std::time::Duration;

use aws_sdk_route53::error::BuildError;
use aws_sdk_route53::types::{
    Change as RecordChange, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord, ResourceRecordSet,
    RrType,
};

use super::{AwsError, AwsResultExt, Change, Removed, not_found_as_none, wait_for};

/// TTL of the record: short, so a replaced instance is found soon.
const TTL: i64 = 60;

/// The record as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Its addresses.
    pub values: Vec<String>,
    /// Its TTL.
    pub ttl: Option<i64>,
}

/// What `apply` will do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The summary.
    pub change: Change,
    /// The record's values when they are not the deployment's (replacing them needs consent).
    pub foreign: Option<Vec<String>>,
}

/// True when every value of the record is one of the deployment's addresses (`owned`).
pub fn is_owned(o: &Observed, owned: &[String]) -> bool {
    !o.values.is_empty() && o.values.iter().all(|v| owned.contains(v))
}

fn resource(domain: &str) -> String {
    format!("DNS record {domain}")
}

/// The fully qualified form Route 53 uses: lowercase, with the final dot.
pub fn fqdn(domain: &str) -> String {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    format!("{d}.")
}

/// A zone ID without the `/hostedzone/` prefix.
fn bare_zone_id(id: &str) -> String {
    id.trim_start_matches("/hostedzone/").to_string()
}

/// The public hosted zone found for a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundZone {
    /// Its ID (without `/hostedzone/`).
    pub id: String,
    /// Its name, with the final dot.
    pub name: String,
    /// The IDs of other public zones of the same name, which were not chosen.
    pub others: Vec<String>,
}

impl FoundZone {
    /// A warning when other public zones share the chosen one's name: only the one the domain's
    /// registrar delegates to is seen by resolvers, and the account cannot tell which it is.
    pub fn warning(&self) -> Option<String> {
        (!self.others.is_empty()).then(|| {
            format!(
                "{} public hosted zones are named {}: using {} (the first listed), not {}; records in \
                 a zone the registrar does not delegate to are seen by nobody. Pass --hosted-zone-id to choose",
                self.others.len() + 1,
                self.name,
                self.id,
                self.others.join(", ")
            )
        })
    }
}

/// The public hosted zone that holds `domain`: the one with the longest name that `domain` ends
/// with (e.g. `example.com.` for `registry.example.com`); of several with that name, the first
/// listed, with the others named in [`FoundZone::others`].
pub async fn find_zone(aws: &super::Aws, domain: &str) -> Result<FoundZone, AwsError> {
    let res = format!("the Route 53 hosted zone of {domain}");
    let name = fqdn(domain);
    let mut best: Option<FoundZone> = None;
    let mut marker: Option<String> = None;
    loop {
        let out = aws
            .route53
            .list_hosted_zones()
            .set_marker(marker.clone())
            .send()
            .await
            .aws("route53:ListHostedZones", &res)?;
        for z in out.hosted_zones() {
            let zone = fqdn(z.name());
            let private = z.config().is_some_and(|c| c.private_zone());
            if private || !(name == zone || name.ends_with(&format!(".{zone}"))) {
                continue;
            }
            let id = bare_zone_id(z.id());
            match &mut best {
                Some(b) if b.name == zone => b.others.push(id),
                Some(b) if b.name.len() >= zone.len() => {}
                _ => best = Some(FoundZone { id, name: zone, others: vec![] }),
            }
        }
        marker = out.next_marker().map(str::to_string);
        if !out.is_truncated() || marker.is_none() {
            break;
        }
    }
    best.ok_or_else(|| {
        AwsError::local(
            "route53:ListHostedZones",
            &res,
            "no public hosted zone in the account contains this name: create one, or pass --hosted-zone-id",
        )
    })
}

/// The A record of `domain` in the zone, if any.
pub async fn observe(aws: &super::Aws, zone: &str, domain: &str) -> Result<Option<Observed>, AwsError> {
    let name = fqdn(domain);
    let out = aws
        .route53
        .list_resource_record_sets()
        .hosted_zone_id(zone)
        .start_record_name(&name)
        .start_record_type(RrType::A)
        .max_items(1)
        .send()
        .await
        .aws("route53:ListResourceRecordSets", &resource(domain));
    let Some(out) = not_found_as_none(out, &["NoSuchHostedZone"])? else {
        return Err(AwsError::local(
            "route53:ListResourceRecordSets",
            resource(domain),
            format!("hosted zone {zone} does not exist: check --hosted-zone-id"),
        ));
    };
    Ok(out.resource_record_sets().iter().find(|r| fqdn(r.name()) == name && r.r#type() == &RrType::A).map(
        |r| Observed {
            values: r.resource_records().iter().map(|v| v.value().to_string()).collect(),
            ttl: r.ttl(),
        },
    ))
}

/// Compares the record with one pointing at `ip` (`None`: not known yet, as in a dry run before
/// the instance exists); `owned` are the deployment's addresses, now and as last recorded.
pub fn plan(observed: Option<&Observed>, ip: Option<&str>, owned: &[String]) -> Plan {
    let foreign = observed
        .filter(|o| ip.is_none_or(|ip| o.values != [ip]) && !is_owned(o, owned))
        .map(|o| o.values.clone());
    let to = ip.unwrap_or("the new instance");
    let change = match (observed, ip) {
        (None, _) => Change::Create,
        (Some(o), Some(ip)) if o.values == [ip] && o.ttl == Some(TTL) => Change::Unchanged,
        (Some(o), _) if foreign.is_some() => Change::Update(vec![format!(
            "{} -> {to} (not this deployment's address: replaced only with --yes)",
            o.values.join(",")
        )]),
        (Some(o), Some(ip)) => Change::Update(vec![format!("{} -> {ip}", o.values.join(","))]),
        (Some(_), None) => Change::Update(vec!["point at the new instance".into()]),
    };
    Plan { change, foreign }
}

fn built<T>(r: Result<T, BuildError>, domain: &str) -> Result<T, AwsError> {
    r.map_err(|e| AwsError::local("route53:ChangeResourceRecordSets", resource(domain), e.to_string()))
}

fn record(domain: &str, values: &[String], ttl: i64) -> Result<ResourceRecordSet, AwsError> {
    let mut b = ResourceRecordSet::builder().name(fqdn(domain)).r#type(RrType::A).ttl(ttl);
    for v in values {
        b = b.resource_records(built(ResourceRecord::builder().value(v).build(), domain)?);
    }
    built(b.build(), domain)
}

async fn change(
    aws: &super::Aws,
    zone: &str,
    domain: &str,
    action: ChangeAction,
    set: ResourceRecordSet,
    insync_timeout: Duration,
) -> Result<(), AwsError> {
    let res = resource(domain);
    let batch = built(
        ChangeBatch::builder()
            .comment("regctl")
            .changes(built(RecordChange::builder().action(action).resource_record_set(set).build(), domain)?)
            .build(),
        domain,
    )?;
    let out = aws
        .route53
        .change_resource_record_sets()
        .hosted_zone_id(zone)
        .change_batch(batch)
        .send()
        .await
        .aws("route53:ChangeResourceRecordSets", &res)?;
    let Some(id) = out.change_info().map(|c| c.id().to_string()) else { return Ok(()) };
    wait_for(
        "route53:GetChange",
        &res,
        "the change to be INSYNC",
        Duration::from_secs(2),
        insync_timeout,
        || async {
            let c = aws.route53.get_change().id(&id).send().await.aws("route53:GetChange", &res)?;
            Ok(c.change_info().is_some_and(|i| i.status() == &ChangeStatus::Insync).then_some(()))
        },
    )
    .await
}

/// Creates or updates the record to point at `ip` and waits until the change is INSYNC (which
/// still does not mean every resolver has it).
pub async fn apply(
    aws: &super::Aws,
    zone: &str,
    domain: &str,
    ip: &str,
    plan: &Plan,
    insync_timeout: Duration,
) -> Result<(), AwsError> {
    if plan.change.is_unchanged() {
        return Ok(());
    }
    let set = record(domain, &[ip.to_string()], TTL)?;
    change(aws, zone, domain, ChangeAction::Upsert, set, insync_timeout).await
}

/// Deletes the A record of `domain` (as it is now) if it points at the deployment's addresses
/// (`owned`), and waits until the change is INSYNC; a record pointing elsewhere is kept.
pub async fn destroy(
    aws: &super::Aws,
    zone: &str,
    domain: &str,
    owned: &[String],
    insync_timeout: Duration,
) -> Result<Removed, AwsError> {
    let Some(o) = observe(aws, zone, domain).await? else { return Ok(Removed::Absent) };
    if !is_owned(&o, owned) {
        return Ok(Removed::Kept(format!(
            "points at {}, not at this deployment's address",
            o.values.join(",")
        )));
    }
    let set = record(domain, &o.values, o.ttl.unwrap_or(TTL))?;
    match change(aws, zone, domain, ChangeAction::Delete, set, insync_timeout).await {
        Ok(()) => Ok(Removed::Deleted),
        // Deleted meanwhile: Route 53 rejects the batch as a whole.
        Err(e) if e.is("InvalidChangeBatch") && observe(aws, zone, domain).await?.is_none() => {
            Ok(Removed::Absent)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_compared_fully_qualified() {
        assert_eq!(fqdn("Registry.Example.com"), "registry.example.com.");
        assert_eq!(fqdn("registry.example.com."), "registry.example.com.");
        assert_eq!(bare_zone_id("/hostedzone/Z123"), "Z123");
    }

    #[test]
    fn a_record_at_another_address_is_updated() {
        let o = Observed { values: vec!["198.51.100.1".into()], ttl: Some(TTL) };
        let owned = ["198.51.100.1".to_string()];
        assert_eq!(plan(Some(&o), Some("198.51.100.1"), &owned).change, Change::Unchanged);
        let moved = plan(Some(&o), Some("198.51.100.2"), &owned);
        assert!(matches!(moved.change, Change::Update(_)) && moved.foreign.is_none(), "{moved:?}");
        assert_eq!(plan(None, None, &owned).change, Change::Create);
    }

    #[test]
    fn a_record_pointing_elsewhere_is_foreign() {
        let o = Observed { values: vec!["192.0.2.99".into()], ttl: Some(300) };
        let p = plan(Some(&o), Some("198.51.100.2"), &["198.51.100.2".to_string()]);
        assert_eq!(p.foreign, Some(vec!["192.0.2.99".to_string()]));
        assert!(!is_owned(&o, &[]));
        assert!(is_owned(&o, &["192.0.2.99".to_string()]));
    }
}

//! The Route 53 A record of the registry's DNS name, pointing at the instance's public address
//! or (a scaled deployment) an alias of its load balancer; and the CNAME records that validate
//! its ACM certificate. Every change is waited for until Route 53 reports it INSYNC. An A record
//! is the deployment's only while it points at one of the deployment's addresses (or its load
//! balancer): another value is never deleted, and is replaced only when the operator says so.

use std::time::Duration;

use aws_sdk_route53::error::BuildError;
use aws_sdk_route53::types::{
    AliasTarget, Change as RecordChange, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord,
    ResourceRecordSet, RrType,
};

use super::{AwsError, AwsResultExt, Change, Removed, not_found_as_none, wait_for};

/// TTL of the record: short, so a replaced instance is found soon.
const TTL: i64 = 60;

/// The record as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Its addresses; for an alias, the DNS name of its target (lowercase, no final dot).
    pub values: Vec<String>,
    /// Its TTL (none for an alias).
    pub ttl: Option<i64>,
    /// The hosted zone of the alias target, when the record is an alias.
    pub alias_zone: Option<String>,
}

/// What the A record is to point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// An IPv4 address (the instance's, or its Elastic IP).
    Address(String),
    /// An alias of a load balancer: its DNS name and the canonical hosted zone of that name.
    Alias {
        /// The target's DNS name.
        dns_name: String,
        /// The target's canonical hosted zone ID.
        zone: String,
    },
}

impl Value {
    /// The value as [`Observed::values`] holds it (and as the deployment's `owned` list does).
    pub fn shown(&self) -> String {
        match self {
            Value::Address(ip) => ip.clone(),
            Value::Alias { dns_name, .. } => alias_name(dns_name),
        }
    }

    fn is(&self, o: &Observed) -> bool {
        match self {
            Value::Address(ip) => o.values == [ip.as_str()] && o.ttl == Some(TTL) && o.alias_zone.is_none(),
            Value::Alias { zone, .. } => o.values == [self.shown()] && o.alias_zone.as_deref() == Some(zone),
        }
    }
}

/// An alias target's DNS name as compared: lowercase, without the final dot or the `dualstack.`
/// prefix Route 53 may show.
pub fn alias_name(dns_name: &str) -> String {
    let d = dns_name.trim_end_matches('.').to_ascii_lowercase();
    d.strip_prefix("dualstack.").map(str::to_string).unwrap_or(d)
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
    observe_set(aws, zone, domain, RrType::A).await
}

/// The record set of `name` and type `kind` in the zone, if any.
async fn observe_set(
    aws: &super::Aws,
    zone: &str,
    domain: &str,
    kind: RrType,
) -> Result<Option<Observed>, AwsError> {
    let name = fqdn(domain);
    let out = aws
        .route53
        .list_resource_record_sets()
        .hosted_zone_id(zone)
        .start_record_name(&name)
        .start_record_type(kind.clone())
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
    Ok(out.resource_record_sets().iter().find(|r| fqdn(r.name()) == name && r.r#type() == &kind).map(|r| {
        match r.alias_target() {
            Some(a) => Observed {
                values: vec![alias_name(a.dns_name())],
                ttl: None,
                alias_zone: Some(a.hosted_zone_id().to_string()),
            },
            None => Observed {
                values: r.resource_records().iter().map(|v| v.value().to_string()).collect(),
                ttl: r.ttl(),
                alias_zone: None,
            },
        }
    }))
}

/// Compares the record with one pointing at `want` (`None`: not known yet, as in a dry run before
/// the instance or load balancer exists); `owned` are the deployment's addresses (and load
/// balancer names), now and as last recorded.
pub fn plan(observed: Option<&Observed>, want: Option<&Value>, owned: &[String]) -> Plan {
    let shown = want.map(Value::shown);
    let foreign =
        observed.filter(|o| want.is_none_or(|w| !w.is(o)) && !is_owned(o, owned)).map(|o| o.values.clone());
    let to = shown.as_deref().unwrap_or("the new instance");
    let change = match (observed, want) {
        (None, _) => Change::Create,
        (Some(o), Some(w)) if w.is(o) => Change::Unchanged,
        (Some(o), _) if foreign.is_some() => Change::Update(vec![format!(
            "{} -> {to} (not this deployment's address: replaced only with --yes)",
            o.values.join(",")
        )]),
        (Some(o), Some(_)) => Change::Update(vec![format!("{} -> {to}", o.values.join(","))]),
        (Some(_), None) => Change::Update(vec!["point at the new instance".into()]),
    };
    Plan { change, foreign }
}

fn built<T>(r: Result<T, BuildError>, domain: &str) -> Result<T, AwsError> {
    r.map_err(|e| AwsError::local("route53:ChangeResourceRecordSets", resource(domain), e.to_string()))
}

/// The record set of `domain` and type `kind` as `o` describes it (an alias when it is one).
fn record(domain: &str, kind: RrType, o: &Observed) -> Result<ResourceRecordSet, AwsError> {
    let b = ResourceRecordSet::builder().name(fqdn(domain)).r#type(kind);
    let b = match (&o.alias_zone, o.values.first()) {
        (Some(zone), Some(name)) => b.alias_target(built(
            AliasTarget::builder()
                .hosted_zone_id(zone)
                .dns_name(format!("dualstack.{name}."))
                .evaluate_target_health(true)
                .build(),
            domain,
        )?),
        _ => {
            let mut b = b.ttl(o.ttl.unwrap_or(TTL));
            for v in &o.values {
                b = b.resource_records(built(ResourceRecord::builder().value(v).build(), domain)?);
            }
            b
        }
    };
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

/// Creates or updates the record to point at `want` and waits until the change is INSYNC (which
/// still does not mean every resolver has it).
pub async fn apply(
    aws: &super::Aws,
    zone: &str,
    domain: &str,
    want: &Value,
    plan: &Plan,
    insync_timeout: Duration,
) -> Result<(), AwsError> {
    if plan.change.is_unchanged() {
        return Ok(());
    }
    let set = record(domain, RrType::A, &wanted(want))?;
    change(aws, zone, domain, ChangeAction::Upsert, set, insync_timeout).await
}

/// The record as it is once pointing at `want`.
fn wanted(want: &Value) -> Observed {
    match want {
        Value::Address(ip) => Observed { values: vec![ip.clone()], ttl: Some(TTL), alias_zone: None },
        Value::Alias { zone, .. } => {
            Observed { values: vec![want.shown()], ttl: None, alias_zone: Some(zone.clone()) }
        }
    }
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
    delete(aws, zone, domain, RrType::A, &o, insync_timeout).await
}

/// Deletes the record set `o` of `domain`, and waits until the change is INSYNC.
async fn delete(
    aws: &super::Aws,
    zone: &str,
    domain: &str,
    kind: RrType,
    o: &Observed,
    insync_timeout: Duration,
) -> Result<Removed, AwsError> {
    let set = record(domain, kind.clone(), o)?;
    match change(aws, zone, domain, ChangeAction::Delete, set, insync_timeout).await {
        Ok(()) => Ok(Removed::Deleted),
        // Deleted meanwhile: Route 53 rejects the batch as a whole.
        Err(e) if e.is("InvalidChangeBatch") && observe_set(aws, zone, domain, kind).await?.is_none() => {
            Ok(Removed::Absent)
        }
        Err(e) => Err(e),
    }
}

/// The CNAME record `name` (e.g. ACM's validation record) points at `value`, made or corrected
/// when needed; returns whether it changed. The record is ACM's to name: no other use can have it.
pub async fn set_cname(
    aws: &super::Aws,
    zone: &str,
    name: &str,
    value: &str,
    insync_timeout: Duration,
) -> Result<bool, AwsError> {
    let want = Observed { values: vec![value.to_string()], ttl: Some(TTL), alias_zone: None };
    if observe_set(aws, zone, name, RrType::Cname).await?.is_some_and(|o| o.values == want.values) {
        return Ok(false);
    }
    let set = record(name, RrType::Cname, &want)?;
    change(aws, zone, name, ChangeAction::Upsert, set, insync_timeout).await?;
    Ok(true)
}

/// Deletes the CNAME record `name` while it points at `value` (a record pointing elsewhere is
/// not this deployment's and is kept).
pub async fn delete_cname(
    aws: &super::Aws,
    zone: &str,
    name: &str,
    value: &str,
    insync_timeout: Duration,
) -> Result<Removed, AwsError> {
    let Some(o) = observe_set(aws, zone, name, RrType::Cname).await? else { return Ok(Removed::Absent) };
    if o.values.iter().map(|v| fqdn(v)).ne([fqdn(value)]) {
        return Ok(Removed::Kept(format!("points at {}, not at the certificate's", o.values.join(","))));
    }
    delete(aws, zone, name, RrType::Cname, &o, insync_timeout).await
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
        let o = Observed { values: vec!["198.51.100.1".into()], ttl: Some(TTL), alias_zone: None };
        let owned = ["198.51.100.1".to_string()];
        let at = |ip: &str| Value::Address(ip.to_string());
        assert_eq!(plan(Some(&o), Some(&at("198.51.100.1")), &owned).change, Change::Unchanged);
        let moved = plan(Some(&o), Some(&at("198.51.100.2")), &owned);
        assert!(matches!(moved.change, Change::Update(_)) && moved.foreign.is_none(), "{moved:?}");
        assert_eq!(plan(None, None, &owned).change, Change::Create);
    }

    #[test]
    fn a_record_pointing_elsewhere_is_foreign() {
        let o = Observed { values: vec!["192.0.2.99".into()], ttl: Some(300), alias_zone: None };
        let p = plan(Some(&o), Some(&Value::Address("198.51.100.2".into())), &["198.51.100.2".to_string()]);
        assert_eq!(p.foreign, Some(vec!["192.0.2.99".to_string()]));
        assert!(!is_owned(&o, &[]));
        assert!(is_owned(&o, &["192.0.2.99".to_string()]));
    }

    #[test]
    fn an_alias_to_the_load_balancer_is_compared_by_name_and_zone() {
        let lb =
            Value::Alias { dns_name: "Regctl-1.us-east-1.elb.amazonaws.com".into(), zone: "Z35SX".into() };
        let o = wanted(&lb);
        assert_eq!(o.values, ["regctl-1.us-east-1.elb.amazonaws.com"]);
        assert_eq!(plan(Some(&o), Some(&lb), &[]).change, Change::Unchanged);
        // The same address record is not the alias: it is replaced (only with --yes: not owned).
        let address = Observed { values: vec!["192.0.2.99".into()], ttl: Some(TTL), alias_zone: None };
        assert!(plan(Some(&address), Some(&lb), &[]).foreign.is_some());
        assert_eq!(alias_name("dualstack.regctl-1.us-east-1.elb.amazonaws.com."), lb.shown());
    }
}

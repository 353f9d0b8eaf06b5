//! The steps of a scaled deployment (`--instances N`, N >= 2), after the bucket and IAM: the
//! load balancer's and the instances' security groups, the target group, the ACM certificate
//! (validated through the hosted zone), the Application Load Balancer and its listeners, the
//! launch template, the Auto Scaling group, and the DNS name as an alias of the balancer.

use anyhow::Context;

use super::Run;
use crate::aws::security_group::Role;
use crate::aws::{
    Change, auto_scaling, certificate, dns, instance, launch_template, listener, load_balancer, target_group,
};

impl Run<'_> {
    /// The scaled deployment's steps; returns the load balancer's DNS name once it exists.
    pub(super) async fn scaled(&self, size: i32, profile: &str) -> anyhow::Result<Option<String>> {
        let (aws, t, names) = (self.aws, self.target, &self.opts.names);
        let instance::Desired::Launch(spec) = &t.instance_wanted else {
            anyhow::bail!("a scaled deployment launches its own instances: drop --instance-id");
        };
        let spread = instance::spread(aws, &spec.instance_type).await?;
        self.rep.say(format!(
            "{size} instances of {} over {} (default subnets {})",
            spec.instance_type,
            spread.zones.join(", "),
            spread.subnets.join(", ")
        ));
        let vpc = spread.vpc_id.as_str();
        let balancer_group = self.group(names.balancer_security_group(), vpc, Role::Balancer).await?;
        let group = self
            .group(names.security_group(), vpc, Role::Behind { balancer_group: balancer_group.id.clone() })
            .await?;
        let target_group = self.target_group(vpc).await?;
        let certificate = self.certificate().await?;
        let balancer = self.load_balancer(&spread.subnets, balancer_group.id.clone()).await?;
        self.listeners(balancer.as_ref(), certificate, target_group.clone()).await?;
        let ami = match &spec.ami {
            Some(ami) => ami.clone(),
            None => instance::default_ami(aws, &spread.architecture).await?,
        };
        let template = launch_template::Desired {
            name: names.scaled(),
            ami,
            instance_type: spec.instance_type.clone(),
            key_name: spec.key_name.clone(),
            instance_profile: profile.to_string(),
            security_group: group.id.clone(),
            user_data: crate::ops::release::user_data(&t.bucket_name, &aws.region)?,
            deployment: self.deployment().to_string(),
        };
        let template_change = self.launch_template(&template).await?;
        let scaling = auto_scaling::Desired {
            name: names.scaled(),
            launch_template: template.name.clone(),
            size,
            subnets: spread.subnets.clone(),
            target_group,
            deployment: self.deployment().to_string(),
        };
        let group_change = self.auto_scaling_group(&scaling).await?;
        // Running instances keep the template version they were launched from: replace them.
        if matches!(template_change, Change::Update(_)) && group_change != Change::Create {
            self.instance_refresh(&scaling).await?;
        }
        let want = balancer
            .as_ref()
            .map(|b| dns::Value::Alias { dns_name: b.dns_name.clone(), zone: b.canonical_zone.clone() });
        let owned = want.iter().map(dns::Value::shown).collect();
        self.dns(&group, want.as_ref(), owned).await?;
        Ok(balancer.map(|b| b.dns_name))
    }

    /// The target group; returns its ARN (`None` in a dry run that would create it).
    async fn target_group(&self, vpc: &str) -> anyhow::Result<Option<String>> {
        let (aws, name) = (self.aws, self.opts.names.scaled());
        self.rep
            .step("target group", &name, self.dry, async {
                let observed = target_group::observe(aws, &name).await?;
                let plan = target_group::plan(observed.as_ref());
                if self.dry {
                    return Ok((plan.change, observed.map(|o| o.arn)));
                }
                let arn =
                    target_group::apply(aws, &name, vpc, self.deployment(), &plan, observed.as_ref()).await?;
                Ok((plan.change, Some(arn)))
            })
            .await
    }

    /// The certificate and its validation record; returns its ARN once issued (`None` in a dry
    /// run before then).
    async fn certificate(&self) -> anyhow::Result<Option<String>> {
        let (aws, t, opts) = (self.aws, self.target, self.opts);
        self.rep
            .step("ACM certificate", &t.domain, self.dry, async {
                let observed = certificate::observe(aws, &t.domain, self.deployment()).await?;
                let change = certificate::plan(observed.as_ref());
                if self.dry {
                    let issued = observed.filter(|_| change.is_unchanged()).map(|o| o.arn);
                    return Ok((change, issued));
                }
                let arn = certificate::apply(
                    aws,
                    &t.domain,
                    self.deployment(),
                    &t.zone,
                    observed.as_ref(),
                    opts.insync_timeout,
                    opts.certificate_timeout,
                )
                .await?;
                Ok((change, Some(arn)))
            })
            .await
    }

    /// The load balancer; returns it (`None` in a dry run that would create it).
    async fn load_balancer(
        &self,
        subnets: &[String],
        security_group: Option<String>,
    ) -> anyhow::Result<Option<load_balancer::Observed>> {
        let aws = self.aws;
        let desired = load_balancer::Desired {
            name: self.opts.names.scaled(),
            subnets: subnets.to_vec(),
            security_group,
            deployment: self.deployment().to_string(),
        };
        self.rep
            .step("load balancer", &desired.name, self.dry, async {
                let observed = load_balancer::observe(aws, &desired.name).await?;
                let plan = load_balancer::plan(observed.as_ref(), &desired);
                if self.dry {
                    return Ok((plan.change, observed));
                }
                let o = load_balancer::apply(aws, &desired, &plan).await?;
                Ok((plan.change, Some(o)))
            })
            .await
    }

    /// The HTTPS listener (with the certificate, forwarding to the target group) and the HTTP one
    /// (redirecting to HTTPS).
    async fn listeners(
        &self,
        balancer: Option<&load_balancer::Observed>,
        certificate: Option<String>,
        target_group: Option<String>,
    ) -> anyhow::Result<()> {
        let aws = self.aws;
        let observed = match balancer {
            Some(b) => listener::observe(aws, &b.arn).await?,
            None => vec![],
        };
        for desired in [listener::Desired::Https { certificate, target_group }, listener::Desired::Redirect] {
            let port = desired.port();
            let current = observed.iter().find(|l| l.port == port);
            let label = format!("{} {port}", self.opts.names.scaled());
            self.rep
                .step("listener", &label, self.dry, async {
                    let change = listener::plan(current, &desired);
                    if !self.dry {
                        let balancer = balancer.context("the load balancer has no ARN")?;
                        listener::apply(aws, &balancer.arn, &desired, current, self.deployment()).await?;
                    }
                    Ok((change, ()))
                })
                .await?;
        }
        Ok(())
    }

    /// The launch template; returns its change.
    async fn launch_template(&self, desired: &launch_template::Desired) -> anyhow::Result<Change> {
        let aws = self.aws;
        self.rep
            .step("launch template", &desired.name, self.dry, async {
                let observed = launch_template::observe(aws, &desired.name).await?;
                let change = launch_template::plan(observed.as_ref(), desired);
                if !self.dry {
                    launch_template::apply(aws, desired, &change).await?;
                }
                Ok((change.clone(), change))
            })
            .await
    }

    /// The Auto Scaling group; returns its change.
    async fn auto_scaling_group(&self, desired: &auto_scaling::Desired) -> anyhow::Result<Change> {
        let aws = self.aws;
        let label = format!("{} ({} instances)", desired.name, desired.size);
        self.rep
            .step("Auto Scaling group", &label, self.dry, async {
                let observed = auto_scaling::observe(aws, &desired.name).await?;
                let plan = auto_scaling::plan(observed.as_ref(), desired);
                if observed.as_ref().is_some_and(|o| o.status.is_some()) && !self.dry {
                    anyhow::bail!(
                        "Auto Scaling group {} is being deleted (an interrupted teardown?): wait for it, then run again",
                        desired.name
                    );
                }
                if !self.dry {
                    auto_scaling::apply(aws, desired, &plan).await?;
                }
                Ok((plan.change.clone(), plan.change))
            })
            .await
    }

    /// The instances replaced by ones of the launch template's new version, launch before
    /// terminate, waited for.
    async fn instance_refresh(&self, group: &auto_scaling::Desired) -> anyhow::Result<()> {
        let aws = self.aws;
        let change = Change::Update(vec![format!(
            "replace the {} instances with the new launch template, each launched before one is terminated",
            group.size
        )]);
        self.rep
            .step("instance refresh", &group.name, self.dry, async {
                if !self.dry {
                    let progress = |status: &str, percent: i32| {
                        self.rep.note(format!("instance refresh {status}, {percent}% done"))
                    };
                    auto_scaling::refresh_instances(
                        aws,
                        &group.name,
                        auto_scaling::Replace::Outdated,
                        auto_scaling::REFRESH_TIMEOUT,
                        &progress,
                    )
                    .await?;
                }
                Ok((change, ()))
            })
            .await
    }
}

//! The load balancer's listeners: HTTPS on 443 with the ACM certificate and a TLS 1.3/1.2 policy,
//! forwarding to the target group; HTTP on 80 answering with a permanent redirect to HTTPS.

use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, Certificate, Listener, ProtocolEnum, RedirectActionConfig,
    RedirectActionStatusCodeEnum,
};

use super::load_balancer::elb_tags;
use super::{AwsError, AwsResultExt, Change, Removed, not_found_as_none};

/// The TLS policy of the HTTPS listener: TLS 1.3 and 1.2 with forward-secret AEAD ciphers only.
pub const SSL_POLICY: &str = "ELBSecurityPolicy-TLS13-1-2-2021-06";

/// A listener as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Desired {
    /// HTTPS on 443, ending TLS with the certificate (`None`: not issued yet, in a dry run) and
    /// forwarding to the target group (`None`: not made yet).
    Https {
        /// The certificate's ARN.
        certificate: Option<String>,
        /// The target group's ARN.
        target_group: Option<String>,
    },
    /// HTTP on 80, redirecting to HTTPS.
    Redirect,
}

/// What a listener does, compared between the wanted and the observed one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shape {
    protocol: String,
    ssl_policy: Option<String>,
    certificate: Option<String>,
    action: String,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.protocol, self.action)?;
        if let Some(p) = &self.ssl_policy {
            write!(f, " ({p})")?;
        }
        Ok(())
    }
}

fn action_text(a: &Action) -> String {
    match (a.r#type(), a.redirect_config()) {
        (Some(ActionTypeEnum::Redirect), Some(r)) => format!(
            "redirect to {}:{} ({})",
            r.protocol().unwrap_or("#{protocol}"),
            r.port().unwrap_or("#{port}"),
            r.status_code().map(|c| c.as_str()).unwrap_or_default()
        ),
        (Some(ActionTypeEnum::Forward), _) => format!("forward to {}", a.target_group_arn().unwrap_or("?")),
        (t, _) => t.map_or_else(|| "?".to_string(), |t| t.as_str().to_string()),
    }
}

impl Desired {
    /// The port it listens on.
    pub fn port(&self) -> i32 {
        match self {
            Desired::Https { .. } => 443,
            Desired::Redirect => 80,
        }
    }

    fn protocol(&self) -> ProtocolEnum {
        match self {
            Desired::Https { .. } => ProtocolEnum::Https,
            Desired::Redirect => ProtocolEnum::Http,
        }
    }

    fn action(&self) -> Action {
        match self {
            Desired::Https { target_group, .. } => Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .set_target_group_arn(target_group.clone())
                .build(),
            Desired::Redirect => Action::builder()
                .r#type(ActionTypeEnum::Redirect)
                .redirect_config(
                    RedirectActionConfig::builder()
                        .protocol("HTTPS")
                        .port("443")
                        .status_code(RedirectActionStatusCodeEnum::Http301)
                        .build(),
                )
                .build(),
        }
    }

    fn certificate(&self) -> Option<String> {
        match self {
            Desired::Https { certificate, .. } => certificate.clone(),
            Desired::Redirect => None,
        }
    }

    fn ssl_policy(&self) -> Option<String> {
        matches!(self, Desired::Https { .. }).then(|| SSL_POLICY.to_string())
    }

    fn shape(&self) -> Shape {
        Shape {
            protocol: self.protocol().as_str().to_string(),
            ssl_policy: self.ssl_policy(),
            certificate: self.certificate(),
            action: action_text(&self.action()),
        }
    }
}

/// A listener as it is.
#[derive(Debug, Clone)]
pub struct Observed {
    /// ARN.
    pub arn: String,
    /// Port.
    pub port: i32,
    shape: Shape,
}

impl Observed {
    fn from(l: &Listener) -> Observed {
        // A TLS policy only means something on an HTTPS listener (moto shows one on HTTP too).
        let https = l.protocol() == Some(&ProtocolEnum::Https);
        Observed {
            arn: l.listener_arn().unwrap_or_default().to_string(),
            port: l.port().unwrap_or_default(),
            shape: Shape {
                protocol: l.protocol().map(|p| p.as_str().to_string()).unwrap_or_default(),
                ssl_policy: l.ssl_policy().filter(|_| https).map(str::to_string),
                certificate: l.certificates().first().and_then(|c| c.certificate_arn()).map(str::to_string),
                action: l.default_actions().first().map(action_text).unwrap_or_default(),
            },
        }
    }
}

/// The listeners of the balancer `lb_arn`.
pub async fn observe(aws: &super::Aws, lb_arn: &str) -> Result<Vec<Observed>, AwsError> {
    let out = aws
        .elb
        .describe_listeners()
        .load_balancer_arn(lb_arn)
        .send()
        .await
        .aws("elasticloadbalancing:DescribeListeners", &format!("listeners of {lb_arn}"));
    let Some(out) = not_found_as_none(out, &["LoadBalancerNotFound"])? else { return Ok(vec![]) };
    Ok(out.listeners().iter().map(Observed::from).collect())
}

/// Compares the listener on `d`'s port with `d`.
pub fn plan(observed: Option<&Observed>, d: &Desired) -> Change {
    let want = d.shape();
    match observed {
        None => Change::Create,
        Some(o) if o.shape == want => Change::Unchanged,
        Some(o) => Change::Update(vec![format!("{} -> {want}", o.shape)]),
    }
}

/// Creates the listener on the balancer or converges it.
pub async fn apply(
    aws: &super::Aws,
    lb_arn: &str,
    d: &Desired,
    observed: Option<&Observed>,
    deployment: &str,
) -> Result<(), AwsError> {
    let res = format!("listener {} of {lb_arn}", d.port());
    let certificates = d.certificate().map(|c| vec![Certificate::builder().certificate_arn(c).build()]);
    match observed {
        None => {
            aws.elb
                .create_listener()
                .load_balancer_arn(lb_arn)
                .port(d.port())
                .protocol(d.protocol())
                .set_ssl_policy(d.ssl_policy())
                .set_certificates(certificates)
                .default_actions(d.action())
                .set_tags(Some(elb_tags(deployment)))
                .send()
                .await
                .aws("elasticloadbalancing:CreateListener", &res)?;
        }
        Some(o) if o.shape == d.shape() => {}
        Some(o) => {
            aws.elb
                .modify_listener()
                .listener_arn(&o.arn)
                .port(d.port())
                .protocol(d.protocol())
                .set_ssl_policy(d.ssl_policy())
                .set_certificates(certificates)
                .default_actions(d.action())
                .send()
                .await
                .aws("elasticloadbalancing:ModifyListener", &res)?;
        }
    }
    Ok(())
}

/// Deletes the listener.
pub async fn destroy(aws: &super::Aws, arn: &str) -> Result<Removed, AwsError> {
    let r = aws
        .elb
        .delete_listener()
        .listener_arn(arn)
        .send()
        .await
        .aws("elasticloadbalancing:DeleteListener", &format!("listener {arn}"));
    Ok(not_found_as_none(r, &["ListenerNotFound"])?.map_or(Removed::Absent, |_| Removed::Deleted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_redirect_with_a_tls_policy_shown_is_as_wanted() {
        // moto shows a TLS policy on an HTTP listener too; it means nothing there.
        let shown = Listener::builder()
            .port(80)
            .protocol(ProtocolEnum::Http)
            .ssl_policy("ELBSecurityPolicy-2016-08")
            .default_actions(Desired::Redirect.action())
            .build();
        assert_eq!(plan(Some(&Observed::from(&shown)), &Desired::Redirect), Change::Unchanged);
        // Another certificate on the HTTPS listener is a change.
        let https =
            |cert: &str| Desired::Https { certificate: Some(cert.into()), target_group: Some("tg".into()) };
        let listener = Listener::builder()
            .port(443)
            .protocol(ProtocolEnum::Https)
            .ssl_policy(SSL_POLICY)
            .certificates(Certificate::builder().certificate_arn("old").build())
            .default_actions(https("old").action())
            .build();
        assert_eq!(plan(Some(&Observed::from(&listener)), &https("old")), Change::Unchanged);
        assert!(matches!(plan(Some(&Observed::from(&listener)), &https("new")), Change::Update(_)));
    }
}

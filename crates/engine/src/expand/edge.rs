//! The edge of the public service: its target group, the load balancer, the certificate, the
//! listeners and the alias records.

use super::*;

/// The edge's resources, and which service is public.
pub(super) struct Edge {
    pub resources: Vec<Desired>,
    pub public: Option<String>,
    /// An HTTPS listener exists (the stack has a domain).
    pub https: bool,
}

pub(super) fn edge(stack: &Stack, facts: &Facts, place: &Placement) -> Result<Edge, ExpandError> {
    let name = &stack.stack.0;
    let mut out = Vec::new();
    let public = stack.services.iter().find(|(_, s)| s.public);
    let zone = match (&stack.domain, &facts.hosted_zone) {
        (Some(_), Some(z)) => Some(z),
        (Some(d), None) => {
            return Err(ExpandError::NotLookedUp { key: "domain.zone", what: format!("the hosted zone `{}`", d.zone) })
        }
        _ => None,
    };
    if let Some((svc_name, svc)) = public {
        let tg = format!("tg-{svc_name}");
        let (vpc, subnets) = (place.vpc.clone(), place.public_subnets.clone());
        out.push(Desired::of(
            &tg,
            &kind::TargetGroup {
                name: bounded_name(&format!("{name}-{svc_name}"), 32),
                protocol: "HTTP".into(),
                port: i32::from(svc.port.unwrap_or(8080)),
                target_type: "ip".into(),
                vpc,
                health_check: kind::HealthCheck {
                    path: svc.health.as_ref().map(|h| h.0.as_str()).unwrap_or("/healthz").into(),
                    interval: defaults::HEALTH_INTERVAL as i32,
                    timeout: defaults::HEALTH_TIMEOUT as i32,
                    healthy: 2,
                    unhealthy: 3,
                    matcher: "200".into(),
                },
                deregistration_delay: defaults::DEREGISTRATION_DELAY,
            },
        ));
        let lb = kind::LoadBalancer {
            name: bounded_name(name, 32),
            scheme: "internet-facing".into(),
            ip_address_type: if dualstack(stack) { "dualstack" } else { "ipv4" }.into(),
            subnets,
            security_groups: vec![Val::to("lb-sg", "id")],
            // Where its alias records live: lets `down` find them without the stack file.
            dns_zone: zone.map(|z| z.id.clone()),
            public_name: stack.domain.as_ref().filter(|_| zone.is_some()).map(|d| record_name(&d.name.0)),
        };
        let mut lb = Desired::of(LOAD_BALANCER, &lb);
        // An internet-facing load balancer needs the gateway attached and routed.
        lb.depends_on.extend(place.lb_paths.iter().cloned());
        out.push(lb);
        let listener = |port: i32, protocol: &str, default_action: kind::Action| kind::Listener {
            load_balancer: Val::to(LOAD_BALANCER, "arn"),
            port,
            protocol: protocol.into(),
            ssl_policy: None,
            certificate: None,
            default_action,
        };
        let forward = kind::Action::Forward { target_group: Val::to(&tg, "arn") };
        match (&stack.domain, zone) {
            (Some(domain), Some(z)) => {
                let certificate = kind::Certificate {
                    domain: domain.name.0.clone(),
                    // The previews' names (`preview.rs`).
                    wildcard: true,
                    validation: kind::Validation::Dns,
                    zone_id: Some(z.id.clone()),
                };
                out.push(Desired::of(CERTIFICATE, &certificate));
                let redirect =
                    kind::Action::Redirect { protocol: "HTTPS".into(), port: "443".into(), status: "HTTP_301".into() };
                out.push(Desired::of("listener-http", &listener(80, "HTTP", redirect)));
                let https = kind::Listener {
                    ssl_policy: Some(defaults::TLS_POLICY.into()),
                    certificate: Some(Val::to(CERTIFICATE, "arn")),
                    ..listener(443, "HTTPS", forward)
                };
                out.push(Desired::of("listener-https", &https));
                let types: &[(&str, &str)] =
                    if dualstack(stack) { &[("dns-a", "A"), ("dns-aaaa", "AAAA")] } else { &[("dns-a", "A")] };
                for (id, ty) in types.iter().copied() {
                    let record = kind::DnsRecord {
                        zone_id: z.id.clone(),
                        name: record_name(&domain.name.0),
                        r#type: ty.into(),
                        alias: kind::Alias {
                            dns_name: Val::to(LOAD_BALANCER, "dns_name"),
                            zone_id: Val::to(LOAD_BALANCER, "zone_id"),
                        },
                    };
                    out.push(Desired::of(id, &record));
                }
            }
            _ => out.push(Desired::of("listener-http", &listener(80, "HTTP", forward))),
        }
    }

    Ok(Edge { resources: out, public: public.map(|(n, _)| n.clone()), https: public.is_some() && zone.is_some() })
}

/// A DNS name as Route 53 writes it: absolute, with its final dot.
pub fn record_name(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

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

pub(super) fn edge(stack: &Stack, facts: &Facts, place: &Placement) -> Result<Edge, String> {
    let name = &stack.stack.0;
    let mut out = Vec::new();
    let public = stack.services.iter().find(|(_, s)| s.public);
    let zone = match (&stack.domain, &facts.hosted_zone) {
        (Some(_), Some(z)) => Some(z),
        (Some(d), None) => {
            return Err(format!("domain.zone: the hosted zone `{}` was not looked up (an internal error)", d.zone))
        }
        _ => None,
    };
    if let Some((svc_name, svc)) = public {
        let tg = format!("tg-{svc_name}");
        let port = svc.port.unwrap_or(8080);
        out.push(Desired::new(
            &tg,
            Kind::TargetGroup,
            json!({
                "name": bounded_name(&format!("{name}-{svc_name}"), 32),
                "protocol": "HTTP",
                "port": port,
                "target_type": "ip",
                "vpc": place.vpc,
                "health_check": {
                    "path": svc.health.as_ref().map(|h| h.0.as_str()).unwrap_or("/healthz"),
                    "interval": defaults::HEALTH_INTERVAL,
                    "timeout": defaults::HEALTH_TIMEOUT,
                    "healthy": 2,
                    "unhealthy": 3,
                    "matcher": "200",
                },
                "deregistration_delay": defaults::DEREGISTRATION_DELAY,
            }),
        ));
        let mut lb = json!({
            "name": bounded_name(name, 32),
            "scheme": "internet-facing",
            "ip_address_type": if dualstack(stack) { "dualstack" } else { "ipv4" },
            "subnets": place.public_subnets,
            "security_groups": [reference("lb-sg", "id")],
        });
        if let Some(z) = zone {
            // Where its alias records live: lets `down` find them without the stack file.
            lb["dns_zone"] = json!(z.id);
        }
        let mut lb = Desired::new(LOAD_BALANCER, Kind::LoadBalancer, lb);
        // An internet-facing load balancer needs the gateway attached and routed.
        lb.depends_on.extend(place.lb_paths.iter().cloned());
        out.push(lb);
        let forward = json!({ "type": "forward", "target_group": reference(&tg, "arn") });
        match (&stack.domain, zone) {
            (Some(domain), Some(z)) => {
                out.push(Desired::new(
                    CERTIFICATE,
                    Kind::Certificate,
                    json!({ "domain": domain.name.0, "validation": "DNS", "zone_id": z.id }),
                ));
                out.push(Desired::new(
                    "listener-http",
                    Kind::Listener,
                    json!({
                        "load_balancer": reference(LOAD_BALANCER, "arn"),
                        "port": 80,
                        "protocol": "HTTP",
                        "default_action": { "type": "redirect", "protocol": "HTTPS", "port": "443", "status": "HTTP_301" },
                    }),
                ));
                out.push(Desired::new(
                    "listener-https",
                    Kind::Listener,
                    json!({
                        "load_balancer": reference(LOAD_BALANCER, "arn"),
                        "port": 443,
                        "protocol": "HTTPS",
                        "ssl_policy": defaults::TLS_POLICY,
                        "certificate": reference(CERTIFICATE, "arn"),
                        "default_action": forward,
                    }),
                ));
                let types: &[(&str, &str)] =
                    if dualstack(stack) { &[("dns-a", "A"), ("dns-aaaa", "AAAA")] } else { &[("dns-a", "A")] };
                for (id, ty) in types.iter().copied() {
                    out.push(Desired::new(
                        id,
                        Kind::DnsRecord,
                        json!({
                            "zone_id": z.id,
                            "name": format!("{}.", domain.name.0.trim_end_matches('.')),
                            "type": ty,
                            "alias": { "dns_name": reference(LOAD_BALANCER, "dns_name"), "zone_id": reference(LOAD_BALANCER, "zone_id") },
                        }),
                    ));
                }
            }
            _ => out.push(Desired::new(
                "listener-http",
                Kind::Listener,
                json!({
                    "load_balancer": reference(LOAD_BALANCER, "arn"),
                    "port": 80,
                    "protocol": "HTTP",
                    "default_action": forward,
                }),
            )),
        }
    }

    Ok(Edge { resources: out, public: public.map(|(n, _)| n.clone()), https: public.is_some() && zone.is_some() })
}

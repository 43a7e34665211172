//! An answer rewrite for the proxy: AWS offers each interface endpoint service in some zones of a
//! region only (`ServiceDetails[].AvailabilityZones` of `DescribeVpcEndpointServices`); moto
//! offers every service in every zone. Dropping a zone from one service's list reproduces AWS.

/// `body` (EC2's XML answer to `DescribeVpcEndpointServices`) without `zone` in the zones of the
/// service whose name ends with `.{service}`.
pub fn drop_zone(body: &str, service: &str, zone: &str) -> String {
    let name = format!(".{service}</serviceName>");
    let item = format!("<item>{zone}</item>");
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = rest.find(&name) {
        // This service's zone list is the next one after its name.
        let Some(set) = rest[at..].find("<availabilityZoneSet>").map(|s| at + s) else { break };
        let Some(end) = rest[set..].find("</availabilityZoneSet>").map(|e| set + e) else { break };
        out.push_str(&rest[..set]);
        out.push_str(&rest[set..end].replace(&item, ""));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn drops_the_zone_of_that_service_only() {
        let body = "<serviceDetailSet>\
            <item><serviceName>com.amazonaws.r.sqs</serviceName><availabilityZoneSet><item>ra</item><item>rb</item></availabilityZoneSet></item>\
            <item><serviceName>com.amazonaws.r.logs</serviceName><availabilityZoneSet><item>ra</item><item>rb</item></availabilityZoneSet></item>\
            </serviceDetailSet>";
        let out = super::drop_zone(body, "sqs", "ra");
        assert_eq!(out, body.replacen("<item>ra</item>", "", 1));
    }
}

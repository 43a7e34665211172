//! Elastic Load Balancing's refusals moto lacks.

use super::*;

/// The rules an Application Load Balancer holds across its listeners, default rules aside
/// (Application Load Balancers Guide, "Quotas for your Application Load Balancers": "Rules per
/// Application Load Balancer (not counting default rules)": 100, adjustable).
pub const RULES_PER_LOAD_BALANCER: usize = 100;

/// `CreateRule` past [`RULES_PER_LOAD_BALANCER`] on the listener's load balancer answers
/// `TooManyRules` ("You've reached the limit on the number of rules per load balancer"); moto
/// creates any number.
pub(super) async fn too_many_rules(moto: &Moto<'_>, call: &Call<'_>) -> Option<Response<Full<Bytes>>> {
    let listener = call.form("ListenerArn").into_iter().next()?;
    // `…:listener/app/NAME/LB/LISTENER` → `…:loadbalancer/app/NAME/LB`.
    let (head, _) = listener.rsplit_once('/')?;
    let lb = head.replacen(":listener/", ":loadbalancer/", 1);
    let form = format!("Action=DescribeListeners&Version=2015-12-01&LoadBalancerArn={}", encode(&lb));
    let listeners = moto.query(call, "elasticloadbalancing", &form).await;
    let mut rules = 0;
    for arn in listeners.split("<ListenerArn>").skip(1).filter_map(|s| s.split('<').next()) {
        // 400 a page, the most AWS gives (moto: 50 unless asked).
        let form = format!("Action=DescribeRules&Version=2015-12-01&PageSize=400&ListenerArn={}", encode(arn));
        rules += moto.query(call, "elasticloadbalancing", &form).await.matches("<IsDefault>false</IsDefault>").count();
    }
    (rules >= RULES_PER_LOAD_BALANCER)
        .then(|| elb_error("TooManyRules", "You've reached the limit on the number of rules per load balancer."))
}

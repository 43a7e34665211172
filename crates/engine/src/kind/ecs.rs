//! The kinds of ecs.

use super::loose;

loose!(Cluster = "ecs.cluster", DeleteBeforeCreate, sets [], replace_on [
    ("name", "a cluster's name cannot change"),
]);

// Every change registers a new revision of the family: an update, never a replacement.
loose!(TaskDefinition = "ecs.task-definition", CreateBeforeDelete, sets [], replace_on []);

loose!(Service = "ecs.service", DeleteBeforeCreate, sets ["subnets", "security_groups"], replace_on [
    ("name", "a service's name cannot change"),
    ("cluster", "a service cannot move to another cluster"),
    ("load_balancer", "a service's load balancer is fixed when it is created"),
]);

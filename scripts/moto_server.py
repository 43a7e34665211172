"""The moto server, with the resource of a DynamoDB or Secrets Manager call named as IAM names it.

Under IAM enforcement (`INITIAL_NO_AUTH_ACTION_COUNT`, or a POST to /moto-api/reset-auth), moto
authorizes every call of these two services against the resource "*", so a policy scoped to one
table or one secret, as aira writes its roles, would refuse every call. AWS authorizes a call
against the table's ARN (its index's, for a query of an index) and the secret's ARN; these
handlers say so. A call naming several tables (a transaction) is authorized against the first
one, where AWS checks each: aira's stacks have one table.

moto also cannot check a trust policy that names a service (`"Principal": {"Service": …}`: it fails
with a TypeError). A service here is an IAM user of that name (`ecs-tasks.amazonaws.com`): the
harness of `scripts/deployed` signs as `ecs-tasks.amazonaws.com` to assume the task roles, as ECS
does, and no other user can assume them.

moto checks a signature against the request's parameters as it parsed them, encoded again: a GET
of a REST protocol (Route 53, Amazon Managed Service for Prometheus) is checked as if its query
were its body, and a form (EC2, IAM, CloudWatch…) whose values hold a space fails when the client
encoded it as `%20` (the Rust SDK does) rather than `+`: SignatureDoesNotMatch. SigV4 signs the body
as sent, none for a GET; so does this check here (the raw body is kept before the form is parsed).

moto backs up a transaction by deep-copying every table it names, on every `TransactWriteItems`:
its cost grows with the table, and 200 users chatting brought moto to 23 requests a second. Here
a transaction backs up only the items it names, and puts them back if it is cancelled. moto also
answers a Query of the table by sorting every item of the table: at 4,800 items a query took
300-500 ms, and a long run slowed from 5 messages a second to 1 (bench/soak.sh). Here a query of
the table sorts its partition only; the items it returns are the same.

The conforming proxy reads moto's state to judge a call (`crates/testkit/src/aws_rules`), with
no signature; those reads carry `x-aira-harness-read` and are let past IAM: the actions in
`HARNESS_READS` only (the proxy's reads; not `GetSecretValue`, not `GetItem`), and the proxy
strips the header from every request it forwards.

A gateway endpoint's route tables each get a route to its service's prefix list, in AWS as in
moto when the endpoint is made; moto's `ModifyVpcEndpoint` adds and removes tables without adding
or removing their routes, and `DeleteVpcEndpoints` then fails on the first table without one
(`InvalidRoute.NotFound`), leaving the endpoint. Here a table added gets its route and a table
removed loses it, as on AWS (VPC User Guide, "Gateway endpoints": "we add a route to each route
table that you associate with the endpoint").

Everything else is moto as it is.
"""

import copy
import json
import sys
import threading

import flask
import moto.dynamodb.models as dynamodb_models
from moto.core.authorization import ActionAuthenticatorMixin
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler
from moto.ec2.models.vpcs import VPCEndPoint
from moto.iam.access_control import IAMPolicyStatement, IAMRequestBase
from moto.moto_server import werkzeug_app
from moto.secretsmanager.responses import SecretsManagerResponse
from moto.server import main


def _body(handler):
    if isinstance(handler.body, dict):  # DynamoDB's handler parses it before authorizing
        return handler.body
    try:
        body = json.loads(handler.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _table_resource(self):
    body = _body(self)
    name = body.get("TableName")
    if name is None:
        # TransactWriteItems, TransactGetItems: each item names its table.
        for item in body.get("TransactItems") or []:
            name = next((op.get("TableName") for op in item.values() if isinstance(op, dict)), None)
            if name:
                break
    if name is None and body.get("RequestItems"):
        # BatchGetItem, BatchWriteItem: keyed by table.
        name = next(iter(body["RequestItems"]))
    if not name:
        return "*"
    arn = f"arn:aws:dynamodb:{self.region}:{self.current_account}:table/{name}"
    return f"{arn}/index/{body['IndexName']}" if body.get("IndexName") else arn


def _secret_resource(self):
    secret_id = _body(self).get("SecretId")
    if not secret_id:
        return "*"
    if secret_id.startswith("arn:"):
        return secret_id
    secret = self.backend.secrets.get(secret_id)
    return secret.arn if secret is not None else "*"


DynamoHandler._determine_resource = _table_resource
SecretsManagerResponse._determine_resource = _secret_resource


class _NoTableCopy:
    """`copy` as moto's DynamoDB backend sees it: a table is not deep-copied."""

    @staticmethod
    def deepcopy(x, memo=None):
        return x if isinstance(x, Table) else copy.deepcopy(x, memo)

    def __getattr__(self, name):
        return getattr(copy, name)


dynamodb_models.copy = _NoTableCopy()
_transact_write_items = DynamoDBBackend.transact_write_items


def _transact_backing_up_items(self, transact_items):
    saved = []
    for entry in transact_items:
        op = next(iter(entry.values()))
        table = self.tables.get(op.get("TableName"))
        key = op.get("Key") or op.get("Item") or {}
        if table is None or table.hash_key_attr not in key:
            continue
        hash_key = DynamoType(key[table.hash_key_attr])
        range_key = DynamoType(key[table.range_key_attr]) if table.range_key_attr in key else None
        if table.range_key_attr and range_key is None:
            continue
        saved.append((table, hash_key, range_key, copy.deepcopy(table.get_item(hash_key, range_key))))
    try:
        return _transact_write_items(self, transact_items)
    except Exception:
        for table, hash_key, range_key, item in reversed(saved):
            table.delete_item(hash_key, range_key)
            if item is not None and range_key is not None:
                table.items[hash_key][range_key] = item
            elif item is not None:
                table.items[hash_key] = item
        raise


DynamoDBBackend.transact_write_items = _transact_backing_up_items


# moto answers a Query of the table (not of an index) by sorting every item of the table and
# keeping those of the partition: its cost grows with the table (4,800 items: 300 ms a query).
# Here such a query sorts its partition only; the items it returns are the same.
_partition = threading.local()
_all_items = Table.all_items


def _all_items_of_partition(self):
    if getattr(_partition, "table", None) is not self:
        return _all_items(self)
    part = self.items.get(_partition.key)
    if part is None:
        return []
    items = list(part.values()) if self.range_key_attr else [part]
    return sorted(items, key=lambda x: (x.hash_key, x.range_key) if x.range_key else x.hash_key)


_query = Table.query


def _query_one_partition(self, hash_key, *args, **kwargs):
    index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
    if index_name or hash_key is None:
        return _query(self, hash_key, *args, **kwargs)
    _partition.table, _partition.key = self, hash_key
    try:
        return _query(self, hash_key, *args, **kwargs)
    finally:
        _partition.table = _partition.key = None


Table.all_items = _all_items_of_partition
Table.query = _query_one_partition

_check_principal = IAMPolicyStatement._check_principal


def _check_service_principal(self, principal):
    expected = self._statement.get("Principal")
    if isinstance(expected, dict) and "Service" in expected:
        services = expected["Service"]
        services = [services] if isinstance(services, str) else services
        if any(principal.endswith(f":user/{s}") for s in services):
            return True
        if "AWS" not in expected:
            return False
    return _check_principal(self, principal)


IAMPolicyStatement._check_principal = _check_service_principal

_create_aws_request = IAMRequestBase._create_aws_request


def _signed_request(self):
    data = self._data
    if self._method in ("GET", "HEAD", "DELETE"):
        self._data = b""  # the body as sent: none
    elif flask.has_request_context() and getattr(flask.request, "_cached_data", None):
        self._data = flask.request._cached_data  # kept by _keep_raw_body
    try:
        return _create_aws_request(self)
    finally:
        self._data = data


IAMRequestBase._create_aws_request = _signed_request

_decompress_request_body = werkzeug_app.decompress_request_body


def _keep_raw_body():
    # Read and cached before the form is parsed (werkzeug then parses the cached bytes).
    if flask.request.content_encoding != "gzip":
        flask.request.get_data(cache=True)
    return _decompress_request_body()


werkzeug_app.decompress_request_body = _keep_raw_body


# The reads the conforming proxy makes (`HARNESS_READS` in crates/testkit/src/aws_rules/mod.rs).
HARNESS_READS = {
    "DescribeLoadBalancers",
    "DescribeTargetGroups",
    "DescribeSubnets",
    "DescribeInternetGateways",
    "DescribeRouteTables",
    "DescribeListeners",
    "DescribeRules",
    "GetWebACLForResource",
    "ListWebACLs",
    "DescribeWorkspace",
}


def _modify_with_routes(modify):
    def run(self, policy_doc, add_subnets, remove_subnets, add_route_tables, remove_route_tables, *rest):
        modify(self, policy_doc, add_subnets, remove_subnets, add_route_tables, remove_route_tables, *rest)
        prefix_list = self.destination_prefix_list_id
        if (self.vpc_endpoint_type or "").lower() != "gateway" or not prefix_list:
            return
        for table in add_route_tables or []:
            self.ec2_backend.create_route(table, None, gateway_id=self.id, destination_prefix_list_id=prefix_list)
        for table in remove_route_tables or []:
            try:
                self.ec2_backend.delete_route(table, None, destination_prefix_list_id=prefix_list)
            except Exception:  # the table (or its route) is gone already
                pass

    return run


VPCEndPoint.modify = _modify_with_routes(VPCEndPoint.modify)


def _logged(authorize):
    # The proxy's own reads pass; every refusal is named in the server's log: what, to whom, why.
    def run(self, *args, **kwargs):
        action = self._get_action() if hasattr(self, "_get_action") else ""
        harness = any(k.lower() == "x-aira-harness-read" for k in self.headers.keys())
        if harness and action in HARNESS_READS:
            return None
        try:
            return authorize(self, *args, **kwargs)
        except Exception as e:
            resource = args[1] if len(args) > 1 else kwargs.get("resource", "*")
            scope = self.headers.get("Authorization", "").partition("Credential=")[2].partition(",")[0]
            print(f"moto_server.py: refused {action} on {resource} to {scope}: {e!r}", file=sys.stderr, flush=True)
            raise

    return run


ActionAuthenticatorMixin._authenticate_and_authorize_action = _logged(
    ActionAuthenticatorMixin._authenticate_and_authorize_action
)

if __name__ == "__main__":
    sys.exit(main())

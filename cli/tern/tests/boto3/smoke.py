"""Every operation Tern answers, once, through boto3 (the Python SDK) against an endpoint.

Usage: python3 smoke.py http://127.0.0.1:8000
Exits non-zero, naming the step, on the first answer that differs from DynamoDB's.
"""
import sys

import boto3
from boto3.dynamodb.conditions import Attr, Key
from botocore.config import Config

endpoint = sys.argv[1]
session = boto3.session.Session(
    aws_access_key_id="tern", aws_secret_access_key="tern", region_name="us-east-1"
)
config = Config(retries={"max_attempts": 2, "mode": "standard"})
client = session.client("dynamodb", endpoint_url=endpoint, config=config)
resource = session.resource("dynamodb", endpoint_url=endpoint, config=config)


def check(step, cond, detail=""):
    if not cond:
        print(f"FAILED: {step} {detail}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {step}")


table = resource.create_table(
    TableName="boto3-smoke",
    KeySchema=[
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ],
    AttributeDefinitions=[
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "N"},
    ],
    BillingMode="PAY_PER_REQUEST",
)
table.wait_until_exists()
check("CreateTable", table.table_status == "ACTIVE", table.table_status)
check("DescribeTable", client.describe_table(TableName="boto3-smoke")["Table"]["TableName"] == "boto3-smoke")
check("ListTables", "boto3-smoke" in client.list_tables()["TableNames"])

for i in range(10):
    table.put_item(Item={"pk": "a", "sk": i, "v": f"value-{i}", "tags": {"x", "y"}})
check("PutItem", True)
try:
    table.put_item(Item={"pk": "a", "sk": 1}, ConditionExpression=Attr("pk").not_exists())
    check("PutItem condition", False, "no ConditionalCheckFailedException")
except client.exceptions.ConditionalCheckFailedException:
    check("PutItem condition", True)

got = table.get_item(Key={"pk": "a", "sk": 3}, ConsistentRead=True)["Item"]
check("GetItem", got["v"] == "value-3" and got["tags"] == {"x", "y"}, got)

out = table.update_item(
    Key={"pk": "a", "sk": 3},
    UpdateExpression="SET #v = :v ADD hits :one",
    ExpressionAttributeNames={"#v": "v"},
    ExpressionAttributeValues={":v": "updated", ":one": 1},
    ReturnValues="ALL_NEW",
)
check("UpdateItem", out["Attributes"]["v"] == "updated" and out["Attributes"]["hits"] == 1, out)

# Reads right after writes are consistent: an eventually consistent one may not see them yet.
q = table.query(KeyConditionExpression=Key("pk").eq("a") & Key("sk").between(2, 5), ConsistentRead=True)
check("Query", [int(i["sk"]) for i in q["Items"]] == [2, 3, 4, 5], q["Items"])
q = table.query(
    KeyConditionExpression=Key("pk").eq("a"), ScanIndexForward=False, Limit=3, ConsistentRead=True
)
check("Query page", [int(i["sk"]) for i in q["Items"]] == [9, 8, 7] and "LastEvaluatedKey" in q, q)

s = table.scan(FilterExpression=Attr("v").begins_with("value-"), ConsistentRead=True)
check("Scan", s["Count"] == 9 and s["ScannedCount"] == 10, (s["Count"], s["ScannedCount"]))

with table.batch_writer() as batch:
    for i in range(10, 40):
        batch.put_item(Item={"pk": "b", "sk": i})
check(
    "BatchWriteItem",
    table.query(KeyConditionExpression=Key("pk").eq("b"), ConsistentRead=True)["Count"] == 30,
)
bg = resource.batch_get_item(
    RequestItems={
        "boto3-smoke": {
            "Keys": [{"pk": "b", "sk": i} for i in range(10, 20)],
            "ConsistentRead": True,
        }
    }
)
check("BatchGetItem", len(bg["Responses"]["boto3-smoke"]) == 10, bg)

old = table.delete_item(Key={"pk": "a", "sk": 0}, ReturnValues="ALL_OLD")
check("DeleteItem", old["Attributes"]["v"] == "value-0", old)

try:
    client.get_item(TableName="no-such-table", Key={"pk": {"S": "a"}})
    check("ResourceNotFound", False)
except client.exceptions.ResourceNotFoundException:
    check("ResourceNotFound", True)

check("DescribeEndpoints", len(client.describe_endpoints()["Endpoints"]) == 1)
check("DescribeLimits", client.describe_limits()["TableMaxReadCapacityUnits"] > 0)

client.delete_table(TableName="boto3-smoke")
client.get_waiter("table_not_exists").wait(
    TableName="boto3-smoke", WaiterConfig={"Delay": 1, "MaxAttempts": 30}
)
check("DeleteTable", "boto3-smoke" not in client.list_tables()["TableNames"])
print("boto3 smoke: all operations answered as DynamoDB does")

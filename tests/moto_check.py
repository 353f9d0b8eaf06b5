#!/usr/bin/env python3
"""Independent checks and set-up for the provisioning tests, with boto3 (which moto ships)
talking straight to moto_server, not through regctl or its shim.

Usage: moto_check.py ENDPOINT COMMAND [ARGS]
  inventory             JSON of everything regctl could have made (all of it, tagged or not:
                        every test has a moto of its own; an instance's image architecture too;
                        a scaled deployment's load balancers, listeners, target groups, launch
                        templates, Auto Scaling groups and certificates)
  zone DOMAIN           create a public hosted zone, print its ID (again: a second zone of that name)
  key-pairs NAME...     create these EC2 key pairs
  no-public-ips         make the default subnets give new instances no public IPv4 address
  instance              run an instance in the default VPC, print its ID
  fill BUCKET N         write N extra object versions, plus versions and delete markers of a
                        few keys; print the number of versions and delete markers
  versions BUCKET       print "versions markers" of the bucket, or "absent"
  revoke GROUP PORT...  revoke the ingress rules of these ports from the group (by name)
  old-lifecycle BUCKET  put regctl's lifecycle rule as it was before delete markers expired
  record NAME IP         point the A record NAME at IP (in the zone that holds it), as someone else
  bucket NAME REGION DEPLOYMENT
                        create a bucket in REGION tagged regctl:deployment=DEPLOYMENT
"""

import base64
import json
import sys
import time

import boto3
from botocore.exceptions import ClientError


def clients(endpoint):
    kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
              aws_secret_access_key="testing")
    return {s: boto3.client(s, **kw) for s in ("s3", "iam", "ec2", "route53", "elbv2", "autoscaling", "acm")}


def tags_of(tag_list):
    return {t["Key"]: t["Value"] for t in tag_list or []}


def inventory(c):
    s3, iam, ec2, r53 = c["s3"], c["iam"], c["ec2"], c["route53"]
    out = {"buckets": [], "policies": [], "roles": [], "instance_profiles": [], "security_groups": [],
           "instances": [], "addresses": [], "records": []}
    group_names = {g["GroupId"]: g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    for b in s3.list_buckets().get("Buckets", []):
        name = b["Name"]
        entry = {"name": name, "versioning": s3.get_bucket_versioning(Bucket=name).get("Status")}
        try:
            entry["tags"] = tags_of(s3.get_bucket_tagging(Bucket=name)["TagSet"])
        except ClientError:
            entry["tags"] = {}
        try:
            entry["lifecycle"] = s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]
        except ClientError:
            entry["lifecycle"] = None
        try:
            entry["public_access_block"] = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
        except ClientError:
            entry["public_access_block"] = None
        try:
            rules = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
            entry["encryption"] = [r["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] for r in rules]
        except ClientError:
            entry["encryption"] = None
        out["buckets"].append(entry)
    for p in iam.list_policies(Scope="Local")["Policies"]:
        versions = iam.list_policy_versions(PolicyArn=p["Arn"])["Versions"]
        default = next(v for v in versions if v["IsDefaultVersion"])
        doc = iam.get_policy_version(PolicyArn=p["Arn"], VersionId=default["VersionId"])["PolicyVersion"]["Document"]
        out["policies"].append({"name": p["PolicyName"], "versions": len(versions), "document": doc,
                                "tags": tags_of(iam.list_policy_tags(PolicyArn=p["Arn"])["Tags"])})
    for r in iam.list_roles()["Roles"]:
        attached = [a["PolicyArn"] for a in iam.list_attached_role_policies(RoleName=r["RoleName"])["AttachedPolicies"]]
        out["roles"].append({"name": r["RoleName"], "attached": attached, "trust": r["AssumeRolePolicyDocument"],
                             "tags": tags_of(iam.list_role_tags(RoleName=r["RoleName"])["Tags"])})
    for p in iam.list_instance_profiles()["InstanceProfiles"]:
        out["instance_profiles"].append({"name": p["InstanceProfileName"],
                                         "roles": [r["RoleName"] for r in p["Roles"]]})
    for g in ec2.describe_security_groups()["SecurityGroups"]:
        if g["GroupName"] == "default":
            continue
        rules = sorted(
            f'{p.get("IpProtocol")} {p.get("FromPort")}-{p.get("ToPort")} {source}'
            for p in g["IpPermissions"]
            for source in [r["CidrIp"] for r in p.get("IpRanges", [])]
            + [r["CidrIpv6"] for r in p.get("Ipv6Ranges", [])]
            + ["group " + group_names.get(r["GroupId"], r["GroupId"]) for r in p.get("UserIdGroupPairs", [])]
        )
        egress = len(g.get("IpPermissionsEgress", []))
        out["security_groups"].append({"id": g["GroupId"], "name": g["GroupName"], "rules": rules,
                                       "egress_rules": egress, "tags": tags_of(g.get("Tags"))})
    for res in ec2.describe_instances()["Reservations"]:
        for i in res["Instances"]:
            assoc = ec2.describe_iam_instance_profile_associations(
                Filters=[{"Name": "instance-id", "Values": [i["InstanceId"]]}])["IamInstanceProfileAssociations"]
            out["instances"].append({
                "id": i["InstanceId"], "state": i["State"]["Name"], "tags": tags_of(i.get("Tags")),
                "public_ip": i.get("PublicIpAddress"),
                "groups": sorted(g["GroupName"] for g in i.get("SecurityGroups", [])),
                "profile": [a["IamInstanceProfile"]["Arn"] for a in assoc if a["State"] == "associated"],
                "metadata_tokens": i.get("MetadataOptions", {}).get("HttpTokens"),
                "zone": i.get("Placement", {}).get("AvailabilityZone"),
                "key_name": i.get("KeyName"),
                "image": i.get("ImageId"),
                "image_architecture": image_architecture(ec2, i.get("ImageId")),
            })
    for a in ec2.describe_addresses()["Addresses"]:
        out["addresses"].append({"ip": a["PublicIp"], "instance": a.get("InstanceId"), "tags": tags_of(a.get("Tags"))})
    for z in r53.list_hosted_zones()["HostedZones"]:
        for r in r53.list_resource_record_sets(HostedZoneId=z["Id"])["ResourceRecordSets"]:
            if r["Type"] in ("A", "AAAA", "CNAME"):
                entry = {"name": r["Name"], "type": r["Type"], "ttl": r.get("TTL"),
                         "values": [v["Value"] for v in r.get("ResourceRecords", [])]}
                if "AliasTarget" in r:
                    entry["alias"] = {"dns_name": r["AliasTarget"]["DNSName"],
                                      "zone": r["AliasTarget"]["HostedZoneId"]}
                out["records"].append(entry)
    out.update(scaled_inventory(c, group_names))
    return out


def scaled_inventory(c, group_names):
    """A scaled deployment's parts: load balancers (with listeners), target groups (with their
    targets' health), launch templates (their latest version), Auto Scaling groups, certificates."""
    elbv2, autoscaling, acm, ec2 = c["elbv2"], c["autoscaling"], c["acm"], c["ec2"]
    out = {"load_balancers": [], "listeners": [], "target_groups": [], "launch_templates": [],
           "auto_scaling_groups": [], "certificates": []}
    for lb in elbv2.describe_load_balancers()["LoadBalancers"]:
        arn = lb["LoadBalancerArn"]
        attrs = {a["Key"]: a["Value"] for a in elbv2.describe_load_balancer_attributes(LoadBalancerArn=arn)["Attributes"]}
        out["load_balancers"].append({
            "name": lb["LoadBalancerName"], "dns_name": lb["DNSName"], "zone_id": lb["CanonicalHostedZoneId"],
            "scheme": lb["Scheme"], "type": lb["Type"], "zones": len(lb.get("AvailabilityZones", [])),
            "groups": sorted(group_names.get(g, g) for g in lb.get("SecurityGroups", [])),
            "idle_timeout": attrs.get("idle_timeout.timeout_seconds"),
            "tags": tags_of(elbv2.describe_tags(ResourceArns=[arn])["TagDescriptions"][0]["Tags"])})
        for l in elbv2.describe_listeners(LoadBalancerArn=arn)["Listeners"]:
            action = l["DefaultActions"][0]
            out["listeners"].append({
                "port": l["Port"], "protocol": l["Protocol"], "ssl_policy": l.get("SslPolicy"),
                "certificates": [x["CertificateArn"] for x in l.get("Certificates", [])],
                "action": action["Type"], "forward_to": action.get("TargetGroupArn"),
                "redirect": action.get("RedirectConfig")})
    for tg in elbv2.describe_target_groups()["TargetGroups"]:
        arn = tg["TargetGroupArn"]
        attrs = {a["Key"]: a["Value"] for a in elbv2.describe_target_group_attributes(TargetGroupArn=arn)["Attributes"]}
        health = elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
        out["target_groups"].append({
            "name": tg["TargetGroupName"], "arn": arn, "protocol": tg["Protocol"], "port": tg["Port"],
            "health_check_path": tg.get("HealthCheckPath"),
            "deregistration_delay": attrs.get("deregistration_delay.timeout_seconds"),
            "targets": sorted(h["Target"]["Id"] for h in health)})
    for t in ec2.describe_launch_templates()["LaunchTemplates"]:
        data = ec2.describe_launch_template_versions(LaunchTemplateId=t["LaunchTemplateId"], Versions=["$Latest"])[
            "LaunchTemplateVersions"][0]["LaunchTemplateData"]
        interfaces = data.get("NetworkInterfaces", [])
        out["launch_templates"].append({
            "name": t["LaunchTemplateName"], "versions": t["LatestVersionNumber"], "tags": tags_of(t.get("Tags")),
            "image": data.get("ImageId"), "instance_type": data.get("InstanceType"), "key_name": data.get("KeyName"),
            "profile": data.get("IamInstanceProfile", {}).get("Name"),
            "groups": sorted(group_names.get(g, g) for i in interfaces for g in i.get("Groups", [])),
            "public_ip": [i.get("AssociatePublicIpAddress") for i in interfaces],
            "metadata": data.get("MetadataOptions"),
            "user_data": base64.b64decode(data.get("UserData", "")).decode(errors="replace")})
    for g in autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]:
        out["auto_scaling_groups"].append({
            "name": g["AutoScalingGroupName"], "sizes": [g["MinSize"], g["MaxSize"], g["DesiredCapacity"]],
            "instances": sorted(i["InstanceId"] for i in g["Instances"]),
            "subnets": len([s for s in g.get("VPCZoneIdentifier", "").split(",") if s]),
            "target_groups": g.get("TargetGroupARNs", []), "health_check_type": g.get("HealthCheckType"),
            "launch_template": g.get("LaunchTemplate", {}).get("LaunchTemplateName"),
            "tags": {t["Key"]: t["PropagateAtLaunch"] for t in g.get("Tags", [])}})
    for summary in acm.list_certificates()["CertificateSummaryList"]:
        cert = acm.describe_certificate(CertificateArn=summary["CertificateArn"])["Certificate"]
        records = [o["ResourceRecord"] for o in cert.get("DomainValidationOptions", []) if "ResourceRecord" in o]
        out["certificates"].append({
            "arn": cert["CertificateArn"], "domain": cert["DomainName"], "status": cert["Status"],
            "validation": [{"name": r["Name"], "value": r["Value"]} for r in records],
            "tags": tags_of(acm.list_tags_for_certificate(CertificateArn=cert["CertificateArn"])["Tags"])})
    return out


def image_architecture(ec2, image):
    images = ec2.describe_images(ImageIds=[image])["Images"] if image else []
    return images[0].get("Architecture") if images else None


def main():
    endpoint, command, *args = sys.argv[1:]
    c = clients(endpoint)
    if command == "inventory":
        print(json.dumps(inventory(c), sort_keys=True, default=str))
    elif command == "zone":
        z = c["route53"].create_hosted_zone(Name=args[0], CallerReference=f"{args[0]}-{time.time_ns()}")
        print(z["HostedZone"]["Id"].split("/")[-1])
    elif command == "instance":
        ec2 = c["ec2"]
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        i = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro")
        print(i["Instances"][0]["InstanceId"])
    elif command == "key-pairs":
        for name in args:
            c["ec2"].create_key_pair(KeyName=name)
    elif command == "no-public-ips":
        ec2 = c["ec2"]
        for s in ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]:
            ec2.modify_subnet_attribute(SubnetId=s["SubnetId"], MapPublicIpOnLaunch={"Value": False})
    elif command == "fill":
        bucket, n = args[0], int(args[1])
        s3 = c["s3"]
        for k in range(n):
            s3.put_object(Bucket=bucket, Key=f"bulk/{k}", Body=b"x")
        for v in range(3):
            s3.put_object(Bucket=bucket, Key="docker/registry/v2/a", Body=f"version {v}".encode())
        s3.delete_object(Bucket=bucket, Key="docker/registry/v2/a")
        s3.put_object(Bucket=bucket, Key="docker/registry/v2/b", Body=b"b")
        s3.delete_object(Bucket=bucket, Key="docker/registry/v2/b")
        s3.delete_object(Bucket=bucket, Key="docker/registry/v2/b")
        print(count_versions(s3, bucket))
    elif command == "versions":
        print(count_versions(c["s3"], args[0]))
    elif command == "revoke":
        ec2 = c["ec2"]
        group = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [args[0]]}])["SecurityGroups"][0]
        ports = {int(p) for p in args[1:]}
        perms = [p for p in group["IpPermissions"] if p.get("FromPort") in ports]
        ec2.revoke_security_group_ingress(GroupId=group["GroupId"], IpPermissions=perms)
    elif command == "old-lifecycle":
        c["s3"].put_bucket_lifecycle_configuration(Bucket=args[0], LifecycleConfiguration={"Rules": [{
            "ID": "regctl", "Status": "Enabled", "Filter": {"Prefix": ""},
            "NoncurrentVersionExpiration": {"NoncurrentDays": 30},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}}]})
    elif command == "record":
        name, ip = args[0].rstrip(".") + ".", args[1]
        r53 = c["route53"]
        zone = max((z for z in r53.list_hosted_zones()["HostedZones"] if name.endswith("." + z["Name"])),
                   key=lambda z: len(z["Name"]))
        r53.change_resource_record_sets(HostedZoneId=zone["Id"], ChangeBatch={"Changes": [{
            "Action": "UPSERT", "ResourceRecordSet": {"Name": name, "Type": "A", "TTL": 300,
                                                      "ResourceRecords": [{"Value": ip}]}}]})
    elif command == "bucket":
        name, region, deployment = args
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region, aws_access_key_id="testing",
                          aws_secret_access_key="testing")
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
        s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": [{"Key": "regctl:deployment", "Value": deployment}]})
    else:
        sys.exit(f"unknown command {command}")


def count_versions(s3, bucket):
    try:
        versions = markers = 0
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            versions += len(page.get("Versions", []))
            markers += len(page.get("DeleteMarkers", []))
        return f"{versions} {markers}"
    except ClientError as e:
        if e.response["Error"]["Code"] == "NoSuchBucket":
            return "absent"
        raise


if __name__ == "__main__":
    main()

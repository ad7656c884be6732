"""The AWS cloud: credentials found the way the AWS CLI finds them."""

from __future__ import annotations

from skyk.provision.cloud import Cloud, CredentialCheck

NAME = "aws"

# botocore's credential providers that read only the environment and local
# files; the others (instance metadata, containers, SSO, assume-role) call
# the network, which `skyk check` must not.
_LOCAL_PROVIDERS = ("env", "shared-credentials-file", "config-file")
# Profile settings that yield credentials at launch time through the network.
_DEFERRED_SETTINGS = ("role_arn", "sso_session", "sso_start_url", "credential_process")


class AWSCloud(Cloud):
    """Amazon EC2."""

    name = NAME

    def check_credentials(self) -> CredentialCheck:
        import botocore.session
        from botocore.exceptions import BotoCoreError

        try:
            session = botocore.session.Session()
            resolver = session.get_component("credential_provider")
            resolver.providers = [p for p in resolver.providers if p.METHOD in _LOCAL_PROVIDERS]
            credentials = resolver.load_credentials()
            profile = session.get_scoped_config()
        except BotoCoreError as exc:
            return CredentialCheck(False, f"AWS configuration is broken: {exc}",
                                   hint="fix ~/.aws/config or unset AWS_PROFILE")
        if credentials is not None:
            return CredentialCheck(True, f"credentials from {credentials.method}")
        deferred = [s for s in _DEFERRED_SETTINGS if s in profile]
        if deferred:
            return CredentialCheck(True, f"profile uses {deferred[0]}; checked at launch")
        return CredentialCheck(False, "no AWS credentials found",
                               hint="run 'aws configure' or set AWS_ACCESS_KEY_ID and"
                               " AWS_SECRET_ACCESS_KEY")

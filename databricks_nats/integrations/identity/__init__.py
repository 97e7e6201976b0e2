"""Identity-bound publishing (issue 15): OIDC, Databricks and AWS IAM identities become short-lived NATS users.

The auth-callout service (``service.py``, ``databricks-nats auth-service``; its settings file ``config.py``)
runs next to nats-server. It verifies the token a client presents (``oidc.py``: OIDC JWTs against the issuer's
JWKS; ``databricks.py``: a Databricks token asked about at its trusted workspace; ``aws.py``: a signed
``sts:GetCallerIdentity`` request forwarded to STS; every URL by ``urls.py``'s rule), maps the verified
``Identity`` (``identity.py``) to NATS permissions with a policy file (``policy.py``), and answers with a user
JWT (``natsjwt.py``; encrypted with ``xkey.py`` when the server asks for it), auditing every decision
(``audit.py``). The client side (the ``oidc_token`` and ``aws_iam`` token sources) lives in ``sources.py``;
``unverified.py`` reads what a JWT says of itself.

Each module imports what it needs lazily: PyJWT, botocore and nkeys are extras, never needed to import this
package.
"""

__all__: list[str] = []

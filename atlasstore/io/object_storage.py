"""Stores on S3-compatible object storage: settings from the standard AWS environment, the
client behind the store, compare-and-swap on one object, and errors that name the URL.

Writes go through obstore (``zarr.storage.ObjectStore``): its ``set_if_not_exists`` is a real
conditional PUT (``If-None-Match: *``), which the commit protocol and the change log rely on;
zarr's ``FsspecStore`` (s3fs) checks existence and then writes, a race between two writers.

Credentials are never handed to a client object: obstore reads ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` from the environment itself, and a profile
(``AWS_PROFILE`` with ``~/.aws`` files) is read through botocore's credential chain at request
time. So nothing the package pickles (a Dask task), prints, logs or records holds a secret, and
every Dask worker uses the credentials of its own environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

from atlasstore.errors import RemoteStoreError, StoreError

#: URL schemes served by this module (everything else remote goes through fsspec)
S3_SCHEMES = ("s3://", "s3a://")
#: retries of one request (5xx, throttling, dropped connections) with exponential backoff
DEFAULT_MAX_RETRIES = 6
#: keys of ``storage_options`` that would put a secret into pickles, graphs and records
_SECRET_OPTIONS = re.compile(r"secret|token|password|credential|access_key|session", re.I)
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def is_s3(location: str | os.PathLike[str]) -> bool:
    return str(location).startswith(S3_SCHEMES)


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/prefix`` split into its bucket and key prefix (no slashes at the ends)."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str | os.PathLike[str]) -> S3Location:
        text = str(url)
        scheme = next((s for s in S3_SCHEMES if text.startswith(s)), None)
        if scheme is None:
            raise ValueError(f"{text} is not an s3:// URL")
        bucket, _, prefix = text[len(scheme):].partition("/")
        if not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise StoreError(f"{text}: {bucket!r} is not a valid bucket name (3-63 characters: "
                             f"lower-case letters, digits, '.', '-')")
        prefix = prefix.strip("/")
        if any(p in ("", ".", "..") for p in prefix.split("/")) and prefix:
            raise StoreError(f"{text}: the key prefix {prefix!r} has an empty, '.' or '..' part")
        return cls(bucket, prefix)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, name: str) -> str:
        """The object key of ``name`` relative to the prefix."""
        return f"{self.prefix}/{name}" if self.prefix else name


@dataclass(frozen=True)
class S3Settings:
    """Where the S3 service is and how to authenticate, from the standard AWS settings.

    ``endpoint``: ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``, else the profile's
    ``endpoint_url`` (None: AWS itself). ``region``: ``AWS_REGION``/``AWS_DEFAULT_REGION``/the
    profile's, else us-east-1. ``env_credentials``: the key pair is in the environment (else the
    profile ``AWS_PROFILE`` or botocore's default chain). ``max_retries``: ``ATLAS_S3_MAX_RETRIES``.
    Holds no secret.
    """

    endpoint: str | None
    region: str
    profile: str | None
    env_credentials: bool
    max_retries: int = DEFAULT_MAX_RETRIES

    @classmethod
    def from_environment(cls) -> S3Settings:
        env = os.environ
        keys = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION",
                "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
                "ATLAS_S3_MAX_RETRIES", "HOME")
        # the secret itself is not part of the cache key: only whether there is one
        return _settings(tuple(env.get(k) for k in keys), bool(env.get("AWS_SECRET_ACCESS_KEY")))

    def describe(self) -> str:
        return f"endpoint {self.endpoint or 'AWS'} (region {self.region})"


@lru_cache(maxsize=8)
def _settings(values: tuple[str | None, ...], has_secret: bool) -> S3Settings:
    ep_s3, ep, region, default_region, profile, key_id, *_rest, retries, _home = values
    endpoint = ep_s3 or ep or None
    region = region or default_region or None
    if (endpoint is None or region is None) and not (key_id and has_secret and endpoint):
        p_endpoint, p_region = _profile_settings(profile)
        endpoint = endpoint or p_endpoint
        region = region or p_region
    try:
        max_retries = int(retries) if retries else DEFAULT_MAX_RETRIES
    except ValueError:
        raise StoreError(f"ATLAS_S3_MAX_RETRIES must be an integer, got {retries!r}") from None
    return S3Settings(endpoint=endpoint.rstrip("/") if endpoint else None,
                      region=region or "us-east-1", profile=profile or None,
                      env_credentials=bool(key_id and has_secret), max_retries=max_retries)


def _profile_settings(profile: str | None) -> tuple[str | None, str | None]:
    """The endpoint and region a profile configures (``~/.aws/config``), through botocore's own
    resolution (``endpoint_url`` of the profile or its ``services`` section)."""
    try:
        import botocore.session
    except ImportError:
        return None, None
    try:
        session = botocore.session.Session(profile=profile)
        region = session.get_config_variable("region")
        client = session.create_client("s3", region_name=region or "us-east-1",
                                       aws_access_key_id="-", aws_secret_access_key="-")
        url = str(client.meta.endpoint_url)
    except Exception as exc:  # noqa: BLE001 - botocore raises assorted config errors
        raise StoreError(f"cannot read the AWS settings of profile {profile or 'default'}: "
                         f"{type(exc).__name__}: {exc}") from None
    return (None if url.endswith(".amazonaws.com") else url), region


def check_storage_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``storage_options`` for an S3 store: obstore ``S3Config`` keys that hold no secret
    (credentials belong in the environment, or they would travel in every pickled task)."""
    opts = dict(options or {})
    bad = sorted(k for k in opts if _SECRET_OPTIONS.search(k))
    if bad:
        raise StoreError(f"storage options {bad} would put credentials into task graphs and "
                         f"records; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE "
                         f"in the environment instead")
    return opts


def s3_client(location: S3Location, settings: S3Settings | None = None,
              options: Mapping[str, Any] | None = None) -> Any:
    """An ``obstore.store.S3Store`` for the location's bucket and prefix.

    Bounded retries with exponential backoff (5xx, throttling, dropped connections), 5 s to
    connect; plain HTTP is allowed only for an ``http://`` endpoint.
    """
    try:
        from obstore.store import S3Store
    except ImportError:
        raise StoreError(f"{location.url}: S3 stores need obstore; install atlasstore[s3]") from None
    s = settings or S3Settings.from_environment()
    config: dict[str, Any] = {"region": s.region, **check_storage_options(options)}
    if s.endpoint:
        config["endpoint"] = s.endpoint
    credential_provider = None
    if not s.env_credentials and s.profile:
        try:
            import boto3
            from obstore.auth.boto3 import Boto3CredentialProvider
        except ImportError:
            raise StoreError(f"{location.url}: AWS_PROFILE needs boto3; install atlasstore[s3]"
                             ) from None
        credential_provider = Boto3CredentialProvider(boto3.Session(profile_name=s.profile))
    retry = {"max_retries": s.max_retries, "retry_timeout": timedelta(seconds=120),
             "backoff": {"init_backoff": timedelta(milliseconds=100),
                         "max_backoff": timedelta(seconds=5), "base": 2}}
    client_options = {"allow_http": bool(s.endpoint and s.endpoint.startswith("http://")),
                      "connect_timeout": "5s", "timeout": "120s"}
    return S3Store(location.bucket, prefix=location.prefix or None, config=config,  # type: ignore[arg-type]
                   client_options=client_options, retry_config=retry,  # type: ignore[arg-type]
                   credential_provider=credential_provider)


def zarr_store(url: str, read_only: bool, storage_options: Mapping[str, Any] | None = None) -> Any:
    """The zarr Store of an ``s3://`` location (``zarr.storage.ObjectStore`` over obstore)."""
    import zarr.storage

    return zarr.storage.ObjectStore(s3_client(S3Location.parse(url), options=storage_options),
                                    read_only=read_only)


# --------------------------------------------------------------------------- errors


def is_storage_error(exc: BaseException) -> bool:
    """An error raised by an object-store client (obstore, or botocore behind a profile)."""
    return (type(exc).__module__.startswith(("obstore", "botocore"))
            or "Error performing " in str(exc))


#: the instance metadata service, where the credential chain ends when nothing is configured
IMDS_URL = "http://169.254.169.254/"
_PERFORMING = re.compile(r"Error performing (?:list request: Error performing )?(\w+) (\S+?)"
                         r"(?: in [\d.]+\w+)?(?:, after (\d+) retries[^-]*)?\s+-\s+(.*)")


#: what every client says, in its own words, when the service went away: refused, reset or
#: dropped connections, a body cut off mid-request, no answer in time (obstore's reqwest kinds,
#: TensorStore's curl texts, botocore's messages). One outcome, so one message, whatever the
#: moment the service went.
_GONE = re.compile(
    r"kind: (?:Connect|Timeout|Body|Request|Interrupted)\b|error sending request|"
    r"request or response body error|connection (?:reset|refused|closed|aborted)|broken pipe|"
    r"IncompleteRead|IncompleteMessage|UnexpectedEof|timed out|Couldn't connect to server|"
    r"Failure when receiving data|Recv failure|Send failure|Timeout was reached|"
    r"Could not connect to the endpoint URL|Connection was closed before|"
    r"(?:Read|Connect) timeout on endpoint URL|Connection broken", re.I)
#: the reason given for every shape of :data:`_GONE`
UNREACHABLE = "cannot connect to the server"
_ENDPOINT_URL = re.compile(r"endpoint URL: \"([^\"]+)\"")


def explain(exc: BaseException, settings: S3Settings | None = None) -> str:
    """One line naming the request, its URL and what the service answered (never a header,
    so never a credential): ``GET http://host/bucket/key: 403 Forbidden (InvalidAccessKeyId)``.
    A service that went away is named unreachable, however the client noticed."""
    return explain_text(str(exc), settings) or type(exc).__name__


def explain_text(text: str, settings: S3Settings | None = None) -> str:
    """:func:`explain` of an error's text (e.g. one recorded in a run report). ``settings``
    name the endpoint when the text has no URL (default: the environment's)."""
    m = _PERFORMING.search(text)
    if m is None:
        if _GONE.search(text):
            return _unreachable(text, settings)
        # (a long local path plus the reason fit; a server's XML body does not)
        return text.strip().splitlines()[0][:1000] if text.strip() else ""
    method, url, retries, rest = m.groups()
    code = re.search(r"<Code>([^<]+)</Code>", text)
    reason = rest.split("<?xml")[0].strip().rstrip(":").strip()
    reason = reason.removeprefix("Server returned non-2xx status code: ")
    if _GONE.search(text):
        reason = UNREACHABLE
    if code:
        reason += f" ({code.group(1)})"
    tries = f" after {retries} retries" if retries else ""
    if url.startswith(IMDS_URL):  # the credential chain's last resort: nothing was configured
        return ("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                f"AWS_PROFILE (the instance metadata service, tried last, answered {reason})")[:400]
    return f"{method} {url}{tries}: {reason}"[:400]


def _unreachable(text: str, settings: S3Settings | None) -> str:
    """The unreachable message of an error text without obstore's request line: the URL the
    text names (botocore), else the configured endpoint."""
    named = _ENDPOINT_URL.search(text)
    if named:
        return f"{named.group(1)}: {UNREACHABLE}"
    s = settings or S3Settings.from_environment()
    return f"{s.endpoint or 'AWS S3'}: {UNREACHABLE}"


def bucket_problem(location: S3Location, settings: S3Settings | None = None) -> str | None:
    """Why the bucket cannot be used (absent, refused, unreachable), or None when it can; one
    LIST of at most one key."""
    import obstore

    s = settings or S3Settings.from_environment()
    try:
        obstore.list_with_delimiter(s3_client(S3Location(location.bucket, ""), s), "")
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        if "NoSuchBucket" in str(exc):
            return f"bucket {location.bucket!r} does not exist at {s.describe()}"
        return explain(exc)
    return None


@contextmanager
def errors_named(url: str) -> Iterator[None]:
    """Re-raise object-store errors as :class:`RemoteStoreError` naming ``url`` and the request
    (a missing bucket says so)."""
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:
        if not is_storage_error(exc):
            raise
        if "NoSuchBucket" in str(exc):
            bucket = S3Location.parse(url).bucket if is_s3(url) else "?"
            s = S3Settings.from_environment()
            raise RemoteStoreError(f"{url}: bucket {bucket!r} does not exist at {s.describe()}"
                                   ) from None
        raise RemoteStoreError(f"{url}: {explain(exc)}") from None


# --------------------------------------------------------------------------- whole objects


def read_bytes(url: str) -> bytes | None:
    """The whole object at an ``s3://`` URL; None when absent."""
    import obstore

    loc = S3Location.parse(url)
    parent, _, name = loc.prefix.rpartition("/")
    try:
        return bytes(obstore.get(s3_client(S3Location(loc.bucket, parent)), name).bytes())
    except FileNotFoundError:
        return None


def write_bytes(url: str, data: bytes) -> None:
    """Replace the object at an ``s3://`` URL (a PUT is atomic: readers see old or new)."""
    import obstore

    loc = S3Location.parse(url)
    parent, _, name = loc.prefix.rpartition("/")
    obstore.put(s3_client(S3Location(loc.bucket, parent)), name, data)


class ConditionalObject:
    """One object changed only by compare-and-swap on its ETag: created with
    ``If-None-Match: *``, replaced with ``If-Match: <etag>``. The service decides who wins;
    no clock is involved."""

    def __init__(self, client: Any, key: str) -> None:
        self.client = client
        self.key = key

    def create(self, data: bytes) -> str | None:
        """The new ETag, or None when the object exists."""
        import obstore
        from obstore.exceptions import AlreadyExistsError

        try:
            return str(obstore.put(self.client, self.key, data, mode="create")["e_tag"])
        except AlreadyExistsError:
            return None

    def read(self) -> tuple[bytes, str] | None:
        """(content, ETag), or None when absent."""
        import obstore

        try:
            resp = obstore.get(self.client, self.key)
            return bytes(resp.bytes()), str(resp.meta["e_tag"])
        except FileNotFoundError:
            return None

    def replace(self, data: bytes, etag: str) -> str | None:
        """The new ETag, or None when the object changed (or vanished) since ``etag``."""
        import obstore
        from obstore.exceptions import PreconditionError

        try:
            return str(obstore.put(self.client, self.key, data, mode={"e_tag": etag})["e_tag"])
        except (PreconditionError, FileNotFoundError):
            return None

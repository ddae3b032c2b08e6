"""Known Google Cloud locations, kept as explicit lists so a typo fails at preview, not mid-deploy.

Sources: the Firestore "Locations" page and the Cloud Run functions locations page. When Google opens
a new location, add it here (one line) and to the README's config table if it is worth mentioning.
"""

from __future__ import annotations

# Firestore multi-regions. A multi-region is a valid Firestore location and Eventarc trigger region,
# but never a function region.
FIRESTORE_MULTI_REGIONS: frozenset[str] = frozenset({"nam5", "nam7", "eur3"})

# Regions that host both Firestore databases and 2nd-gen Cloud Functions (Cloud Run).
_SHARED_REGIONS: frozenset[str] = frozenset(
    {
        "africa-south1",
        "asia-east1",
        "asia-east2",
        "asia-northeast1",
        "asia-northeast2",
        "asia-northeast3",
        "asia-south1",
        "asia-south2",
        "asia-southeast1",
        "asia-southeast2",
        "australia-southeast1",
        "australia-southeast2",
        "europe-central2",
        "europe-north1",
        "europe-north2",
        "europe-southwest1",
        "europe-west1",
        "europe-west2",
        "europe-west3",
        "europe-west4",
        "europe-west6",
        "europe-west8",
        "europe-west9",
        "europe-west10",
        "europe-west12",
        "me-central1",
        "me-central2",
        "me-west1",
        "northamerica-northeast1",
        "northamerica-northeast2",
        "northamerica-south1",
        "southamerica-east1",
        "southamerica-west1",
        "us-central1",
        "us-east1",
        "us-east4",
        "us-east5",
        "us-south1",
        "us-west1",
        "us-west2",
        "us-west3",
        "us-west4",
    }
)

FIRESTORE_REGIONS: frozenset[str] = _SHARED_REGIONS
FIRESTORE_LOCATIONS: frozenset[str] = FIRESTORE_MULTI_REGIONS | FIRESTORE_REGIONS
FUNCTION_REGIONS: frozenset[str] = _SHARED_REGIONS

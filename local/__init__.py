"""The one-machine stack: what stands in for Eventarc and Google Cloud when running locally."""

"""The System-2 service (FastAPI) and its client: System 2 as a shared, scalable component for
training and serving. JSON in, COCO-RLE masks out; nothing is pickled."""

TOKEN_ENV = "OMNIR1_SYSTEM2_TOKEN"  # the bearer token, from the environment or a k8s Secret

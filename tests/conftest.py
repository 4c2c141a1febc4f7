import os

# Before anything imports TensorFlow: keep its C++ logging out of test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

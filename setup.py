"""Package layout that pyproject.toml cannot express: the CILMP bundle ships inside the package.

``bundles/cilmp`` stays the one copy of the bundle in the repository; a build maps it to the package
``monai_cilmp.bundle`` (its configs, docs, licence and large_files.yml as package data), so an installed wheel
carries it. An editable install or a source checkout reads it from ``bundles/cilmp`` directly (see
``monai_cilmp/utils/bundle.py``). Everything else is declared in pyproject.toml.
"""

from setuptools import find_packages, setup

BUNDLE = "monai_cilmp.bundle"

setup(
    packages=[
        *find_packages(include=["monai_cilmp", "monai_cilmp.*"]),
        BUNDLE,
        f"{BUNDLE}.configs",
        f"{BUNDLE}.configs.datasets",
        f"{BUNDLE}.configs.methods",
        f"{BUNDLE}.docs",
    ],
    package_dir={BUNDLE: "bundles/cilmp"},
    package_data={
        "monai_cilmp": ["**/*.json", "networks/model_configs/hf/*/vocab.txt"],
        BUNDLE: [
            "LICENSE",
            "large_files.yml",
            "configs/*.json",
            "configs/*.conf",
            "configs/*/*.json",
            "docs/*.md",
            "docs/*.txt",
            "docs/*.png",
        ],
    },
    include_package_data=False,
)

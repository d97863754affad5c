"""P4D fine-tuning and export without the P4D branch. Installed as `rgpt4d_sdk.training`."""

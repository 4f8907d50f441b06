"""What the checks feed the model: scenario sizes as functions of the window, prompts with images, drafting inputs
the model agrees with."""

set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_pretraining_lm_load_row4.png.tmp.22593'
$m << EOD
0.120239 0.123169 0.0799561 0.151489 0.0963135 0.105713 0.165771 0.157349
0.155762 0.134033 0.0666504 0.178467 0.0944824 0.116455 0.135742 0.118408
EOD
set title "USMoE per position (authors' LM code), k=1: load (last\nepoch, first seed)"
set xlabel "expert"
set ylabel "MoE layer"
set grid
set key outside right top
unset grid
set palette rgb 33,13,10
set cblabel 'share of routed pairs'
set xtics 1
set ytics 1
plot $m matrix with image notitle
